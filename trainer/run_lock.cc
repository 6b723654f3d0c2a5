#include "trainer/run_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <absl/status/status.h>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "parallel/device.h"

namespace moa::trainer {
namespace {

namespace fs = std::filesystem;

// The Slurm job and array task this process belongs to ("" outside Slurm): a requeued task keeps
// them.
std::string SlurmTask() {
  const char* job = std::getenv("SLURM_ARRAY_JOB_ID");
  if (job == nullptr) job = std::getenv("SLURM_JOB_ID");
  if (job == nullptr) return "";
  const char* task = std::getenv("SLURM_ARRAY_TASK_ID");
  return std::string(job) + (task != nullptr ? std::string("_") + task : std::string());
}

// How many times Slurm has requeued this job (SLURM_RESTART_COUNT; 0 outside Slurm and on the
// first run).
int64_t SlurmRestarts() {
  const char* count = std::getenv("SLURM_RESTART_COUNT");
  return count == nullptr ? 0 : std::atoll(count);
}

// This process's pid namespace ("pid:[4026531836]"): pids compare only within one (containers
// that share the host's name have their own).
std::string PidNamespace() {
  std::error_code ignored;
  return fs::read_symlink("/proc/self/ns/pid", ignored).string();
}

// The lock files this process holds: a lock recording this process's pid is its own while listed
// here, and was left by an earlier process with the same pid otherwise.
std::mutex held_mutex;
std::set<std::string>& HeldLocks() {
  static std::set<std::string> held;
  return held;
}
bool HoldsLock(const std::string& path) {
  std::lock_guard<std::mutex> guard(held_mutex);
  return HeldLocks().count(path) > 0;
}

nlohmann::json ThisOwner() {
  return {{"host", parallel::Hostname()},
          {"pid", static_cast<int64_t>(getpid())},
          {"pid_namespace", PidNamespace()},
          {"slurm", SlurmTask()},
          {"slurm_restarts", SlurmRestarts()}};
}

// Why the owner recorded in the lock at `path` is gone, or "" while it may still run.
std::string StaleReason(const nlohmann::json& owner, const std::string& path) {
  const std::string slurm = SlurmTask();
  // The same task after a requeue; the processes of one allocation (srun steps, salloc) share its
  // job id and restart count, and are told apart below like any others.
  if (!slurm.empty() && owner.value("slurm", "") == slurm &&
      owner.value("slurm_restarts", int64_t{0}) < SlurmRestarts()) {
    return "its Slurm task " + slurm + " is this one, requeued";
  }
  if (owner.value("host", "") == parallel::Hostname()) {
    const pid_t pid = static_cast<pid_t>(owner.value("pid", int64_t{0}));
    // This pid in this pid namespace is this process (a container sharing the host's name has
    // its own namespace, where the same pid is another process).
    if (pid == getpid() && owner.value("pid_namespace", PidNamespace()) == PidNamespace()) {
      return HoldsLock(path) ? "" : "it was left by an earlier process with this pid";
    }
    if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) {
      return "process " + std::to_string(pid) + " no longer runs";
    }
    // An ended process nobody has reaped yet (a container's init may never reap it).
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    const std::string fields((std::istreambuf_iterator<char>(stat)),
                             std::istreambuf_iterator<char>());
    const size_t name_end = fields.rfind(')');
    if (name_end != std::string::npos && fields.compare(name_end, 4, ") Z ") == 0) {
      return "process " + std::to_string(pid) + " has ended";
    }
  }
  return "";
}

// What `path` holds, read through one open file so that its identity (device and inode) and its
// contents belong together.
struct LockFile {
  enum class State { kMissing, kUnreadable, kIncomplete, kComplete };
  State state = State::kMissing;
  std::string path;
  nlohmann::json owner;  // kComplete
  std::string text;      // what it holds
  std::string error;     // kUnreadable: why it cannot be read
  FileId id;
  std::chrono::seconds age{0};  // since its last change
};

LockFile Inspect(const std::string& path) {
  LockFile lock;
  lock.path = path;
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    if (errno != ENOENT) {
      lock.state = LockFile::State::kUnreadable;
      lock.error = std::strerror(errno);
    }
    return lock;
  }
  struct stat info {};
  std::string text;
  if (fstat(fd, &info) == 0) {
    lock.id = {info.st_dev, info.st_ino};
    lock.age = std::chrono::seconds(std::max<int64_t>(0, time(nullptr) - info.st_mtime));
    char buffer[4096];
    for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) text.append(buffer, n);
  }
  close(fd);
  lock.text = text;
  lock.owner = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  lock.state = lock.owner.is_object() ? LockFile::State::kComplete : LockFile::State::kIncomplete;
  return lock;
}

std::string DescribeOwner(const nlohmann::json& owner) {
  const std::string slurm = owner.value("slurm", "");
  return "host " + owner.value("host", "?") + ", pid " + std::to_string(owner.value("pid", 0)) +
         (slurm.empty() ? "" : ", Slurm job " + slurm);
}

// Why the lock is stale ("" while its owner may still run). A lock being written through the
// fallback below is incomplete for a moment; one that has stayed so (`incomplete_for_long`, as the
// caller has seen it) was left by a crash or written by hand. A lock this process cannot read is
// someone else's, and live.
std::string LockStaleReason(const LockFile& lock, bool incomplete_for_long) {
  switch (lock.state) {
    case LockFile::State::kComplete:
      return StaleReason(lock.owner, lock.path);
    case LockFile::State::kIncomplete:
      return incomplete_for_long ? "it holds no complete owner record" : "";
    default:
      return "";
  }
}

// Puts the complete record `text` at `path` unless a file is there: written to a private file,
// then hard-linked into place (atomic, and fails with EEXIST), so no reader sees half of it.
// Filesystems without hard links get an exclusive create and a write. Returns the new file's
// identity, or nullopt when `path` exists.
absl::StatusOr<std::optional<FileId>> CreateWhole(const std::string& path,
                                                  const std::string& text) {
  static std::atomic<uint64_t> calls{0};
  const std::string own = path + "." + parallel::Hostname() + "." + std::to_string(getpid()) + "." +
                          std::to_string(calls.fetch_add(1));
  // The private file may be left over from a killed process that had this pid: overwritten.
  auto write_new = [&text](const std::string& file, bool exclusive) -> absl::StatusOr<FileId> {
    const int fd = open(file.c_str(), O_WRONLY | O_CREAT | (exclusive ? O_EXCL : O_TRUNC), 0644);
    if (fd < 0) return absl::ErrnoToStatus(errno, "cannot create " + file);
    struct stat info {};
    const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                         fstat(fd, &info) == 0;
    const int error = errno;
    close(fd);
    if (!written) {
      unlink(file.c_str());
      return absl::ErrnoToStatus(error, "cannot write " + file);
    }
    return FileId{info.st_dev, info.st_ino};
  };
  MOA_ASSIGN_OR_RETURN(const FileId id, write_new(own, /*exclusive=*/false));
  int error = link(own.c_str(), path.c_str()) == 0 ? 0 : errno;
  // Over NFS a retried link can report EEXIST after the first attempt succeeded: then the
  // private file has two names.
  struct stat info {};
  if (error == EEXIST && stat(own.c_str(), &info) == 0 && info.st_nlink == 2) error = 0;
  unlink(own.c_str());
  if (error == 0) return std::optional<FileId>(id);
  if (error == EEXIST) return std::optional<FileId>();
  if (error != EPERM && error != EOPNOTSUPP && error != ENOSYS) {
    return absl::ErrnoToStatus(error, "cannot create " + path);
  }
  absl::StatusOr<FileId> created = write_new(path, /*exclusive=*/true);
  if (created.ok()) return std::optional<FileId>(*created);
  if (absl::IsAlreadyExists(created.status())) return std::optional<FileId>();
  return created.status();
}

// Whether `lock` is still the file `judged` was: the same device, inode and contents (a new file
// can get a removed one's inode number at once).
bool SameLock(const LockFile& lock, const LockFile& judged) {
  return lock.state != LockFile::State::kMissing && lock.id == judged.id &&
         lock.text == judged.text;
}

// Removes the stale lock `judged` unless it has been replaced since: under an exclusive flock of
// `path`.takeover (a file kept for this; the kernel releases the flock when its holder dies), the
// lock is removed only if it is still the same file. A lock is removed nowhere else but by its
// owner, so of several runs taking over one stale lock, one removes it and the others find
// the lock that run then takes. Returns whether it removed the lock.
absl::StatusOr<bool> RemoveIfStill(const std::string& path, const LockFile& judged) {
  const std::string guard_path = path + ".takeover";
  int guard = open(guard_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  // Another user's guard in a shared folder: a read-only descriptor takes the flock on a local
  // disk (over NFS it cannot, and the takeover is refused below rather than left unguarded).
  if (guard < 0 && errno == EACCES) guard = open(guard_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (guard < 0) return absl::ErrnoToStatus(errno, "cannot open " + guard_path);
  // Filesystems without flock (some Lustre mounts) take over without the guard.
  if (flock(guard, LOCK_EX) != 0 && errno != ENOSYS && errno != ENOLCK && errno != EOPNOTSUPP) {
    const int error = errno;
    close(guard);
    return absl::ErrnoToStatus(error, "cannot lock " + guard_path);
  }
  const bool still = SameLock(Inspect(path), judged);
  if (still) unlink(path.c_str());
  close(guard);
  return still;
}

}  // namespace

bool HoldsRun(const std::string& dir) {
  return fs::exists(dir + "/done") || fs::exists(dir + "/checkpoints/state.safetensors");
}

absl::Status ClaimRunDir(const RunConfig& config) {
  const std::string& dir = config.output.dir;
  const bool resumes_here = !config.train.resume.empty() && fs::exists(dir) &&
                            fs::exists(config.train.resume) &&
                            fs::equivalent(fs::path(dir), fs::path(config.train.resume));
  if (resumes_here || !HoldsRun(dir)) return absl::OkStatus();
  if (!config.output.overwrite) {
    return absl::AlreadyExistsError(
        "output.dir " + dir + " holds a run (" +
        (fs::exists(dir + "/done") ? "it finished" : "it has a checkpoint") +
        "); continue it with `moa train --resume " + dir +
        "`, or start it afresh with --output.overwrite=true");
  }
  std::error_code ignored;
  for (const char* name : {"/done", "/results.jsonl", "/selection.txt"}) {
    fs::remove(dir + name, ignored);
  }
  fs::remove_all(dir + "/checkpoints", ignored);
  fs::remove_all(dir + "/tb", ignored);
  Log(LogLevel::kInfo) << "output.overwrite: removed the previous run's results and checkpoints in "
                       << dir;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RunLock>> RunLock::Acquire(const std::string& dir) {
  MOA_RETURN_IF_ERROR(MakeDirs(dir));
  const std::string path = dir + "/moa.lock";
  const std::string owner = ThisOwner().dump() + "\n";
  // An incomplete lock is judged by how long this process has seen it unchanged (the file's
  // mtime comes from a file server's clock).
  std::optional<LockFile> incomplete;
  std::chrono::steady_clock::time_point incomplete_since;
  for (int attempt = 0; attempt < 100; ++attempt) {
    MOA_ASSIGN_OR_RETURN(const std::optional<FileId> created, CreateWhole(path, owner));
    if (created) {
      std::lock_guard<std::mutex> guard(held_mutex);
      HeldLocks().insert(path);
      return std::unique_ptr<RunLock>(new RunLock(path, *created, owner));
    }
    const LockFile lock = Inspect(path);
    if (lock.state == LockFile::State::kMissing) continue;  // its owner just left
    const auto now = std::chrono::steady_clock::now();
    if (lock.state == LockFile::State::kIncomplete &&
        !(incomplete && SameLock(lock, *incomplete))) {
      incomplete = lock;
      incomplete_since = now;
    }
    const std::string stale =
        LockStaleReason(lock, lock.state == LockFile::State::kIncomplete &&
                                  now - incomplete_since >= std::chrono::seconds(2));
    if (stale.empty()) {
      if (lock.state == LockFile::State::kIncomplete) {  // being written: look again
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      return absl::AlreadyExistsError(
          "output.dir " + dir + " is in use by another run (" + path + ": " +
          (lock.state == LockFile::State::kUnreadable ? "cannot be read: " + lock.error
                                                      : DescribeOwner(lock.owner)) +
          "); if that run is gone, remove " + path);
    }
    MOA_ASSIGN_OR_RETURN(const bool removed, RemoveIfStill(path, lock));
    if (removed) {
      Log(LogLevel::kWarning) << "taking over the stale lock " << path << " (" << stale << ")";
    }
  }
  return absl::AlreadyExistsError("output.dir " + dir + ": " + path +
                                  " stayed incomplete or kept changing; try again");
}

std::optional<LockOwner> LiveLockOwner(const std::string& dir) {
  const LockFile lock = Inspect(dir + "/moa.lock");
  // Seen once: an incomplete lock a minute old by its mtime (allowing for clock skew) is stale.
  if (lock.state == LockFile::State::kMissing ||
      !LockStaleReason(lock, lock.age >= std::chrono::seconds(60)).empty()) {
    return std::nullopt;
  }
  LockOwner owner;
  if (lock.state == LockFile::State::kComplete) {
    owner.host = lock.owner.value("host", "");
    owner.slurm = lock.owner.value("slurm", "");
    owner.description = DescribeOwner(lock.owner);
  } else {
    owner.description = lock.state == LockFile::State::kUnreadable
                            ? "its lock cannot be read: " + lock.error
                            : "its lock is being written";
  }
  return owner;
}

RunLock::~RunLock() {
  // Only its own file: a requeued Slurm task may have taken the lock over from this one. Where a
  // takeover has happened in this folder, under its guard, so that none lands in between.
  // The guard is waited for a second at most (a run that stops on a signal has little time).
  const std::string guard_path = path_ + ".takeover";
  int guard = open(guard_path.c_str(), O_RDWR | O_CLOEXEC);
  if (guard < 0) guard = open(guard_path.c_str(), O_RDONLY | O_CLOEXEC);
  for (int tries = 0;
       guard >= 0 && tries < 100 && flock(guard, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
       ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const LockFile lock = Inspect(path_);
  if (lock.id == id_ && lock.text == text_) unlink(path_.c_str());
  if (guard >= 0) close(guard);
  std::lock_guard<std::mutex> held(held_mutex);
  HeldLocks().erase(path_);
}

}  // namespace moa::trainer
