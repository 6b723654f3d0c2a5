#include "trainer/run_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

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

nlohmann::json ThisOwner() {
  return {{"host", parallel::Hostname()},
          {"pid", static_cast<int64_t>(getpid())},
          {"slurm", SlurmTask()}};
}

// Why the owner recorded in `text` is gone, or "" while it may still run.
std::string StaleReason(const nlohmann::json& owner) {
  const std::string slurm = SlurmTask();
  if (!slurm.empty() && owner.value("slurm", "") == slurm) {
    return "its Slurm task " + slurm + " is this one, requeued";
  }
  if (owner.value("host", "") == parallel::Hostname()) {
    const pid_t pid = static_cast<pid_t>(owner.value("pid", int64_t{0}));
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

// The lock file's owner record, or a null json when `path` is missing or does not hold a complete
// record. A lock is linked into place whole (below), so an incomplete one is not being written:
// it was left by a crash of an older moa, or by hand.
nlohmann::json ReadOwner(const std::string& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  nlohmann::json owner = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return owner.is_object() ? owner : nlohmann::json(nullptr);
}

std::string DescribeOwner(const nlohmann::json& owner) {
  const std::string slurm = owner.value("slurm", "");
  return "host " + owner.value("host", "?") + ", pid " + std::to_string(owner.value("pid", 0)) +
         (slurm.empty() ? "" : ", Slurm job " + slurm);
}

// A name no other call uses: this host, pid and call.
std::string PrivateName(const std::string& path, const std::string& what) {
  static std::atomic<uint64_t> calls{0};
  return path + "." + what + "." + parallel::Hostname() + "." + std::to_string(getpid()) + "." +
         std::to_string(calls.fetch_add(1));
}

// Puts the complete record `text` at `path` unless a file is there: written to a private file,
// then hard-linked into place (atomic, and fails with EEXIST), so no reader ever sees half of
// it. Filesystems without hard links get an exclusive create and a write. Returns false when
// `path` exists.
absl::StatusOr<bool> CreateWhole(const std::string& path, const std::string& text) {
  const std::string own = PrivateName(path, "new");
  MOA_RETURN_IF_ERROR(WriteFileAtomically(own, text));
  const int linked = link(own.c_str(), path.c_str());
  const int link_errno = errno;
  unlink(own.c_str());
  if (linked == 0) return true;
  if (link_errno == EEXIST) return false;
  if (link_errno != EPERM && link_errno != EOPNOTSUPP && link_errno != ENOSYS) {
    return absl::UnavailableError("cannot create " + path + ": " + std::strerror(link_errno));
  }
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    return absl::UnavailableError("cannot create " + path + ": " + std::strerror(errno));
  }
  const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int write_errno = errno;
  close(fd);
  if (!written) {
    unlink(path.c_str());
    return absl::UnavailableError("cannot write " + path + ": " + std::strerror(write_errno));
  }
  return true;
}

// Removes the stale lock at `path` whose record was `judged`, unless another process replaced it
// since it was read. Removals are serialised by a second lock, `path`.break, under which the
// record is read again, so a lock taken since it was judged stale is never removed. A .break
// older than a minute was left by a process that died within these few lines, and goes.
enum class Removal { kRemoved, kReplaced, kBusy };  // kBusy: another process is removing it
absl::StatusOr<Removal> RemoveIfStill(const std::string& path, const nlohmann::json& judged,
                                      const std::string& owner) {
  const std::string breaker = path + ".break";
  MOA_ASSIGN_OR_RETURN(const bool holds, CreateWhole(breaker, owner));
  if (!holds) {
    std::error_code ec;
    const auto written = fs::last_write_time(breaker, ec);
    if (!ec && fs::file_time_type::clock::now() - written > std::chrono::minutes(1)) {
      Log(LogLevel::kWarning) << "removing " << breaker << ", left by a run that ended";
      unlink(breaker.c_str());
    }
    return Removal::kBusy;
  }
  const bool still = ReadOwner(path) == judged;
  if (still) unlink(path.c_str());
  unlink(breaker.c_str());
  return still ? Removal::kRemoved : Removal::kReplaced;
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
  for (int attempt = 0; attempt < 200; ++attempt) {
    MOA_ASSIGN_OR_RETURN(const bool created, CreateWhole(path, owner));
    if (created) return std::unique_ptr<RunLock>(new RunLock(path));
    const nlohmann::json recorded = ReadOwner(path);
    if (recorded.is_null() && !std::filesystem::exists(path)) continue;  // its owner just left
    const std::string stale = recorded.is_null() ? std::string("it holds no complete owner record")
                                                 : StaleReason(recorded);
    if (stale.empty()) {
      return absl::AlreadyExistsError("output.dir " + dir + " is in use by another run (" + path +
                                      ": " + DescribeOwner(recorded) +
                                      "); if that run is gone, remove " + path);
    }
    MOA_ASSIGN_OR_RETURN(const Removal removal, RemoveIfStill(path, recorded, owner));
    if (removal == Removal::kRemoved) {
      Log(LogLevel::kWarning) << "taking over the stale lock " << path << " (" << stale << ")";
    } else if (removal == Removal::kBusy) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  return absl::AlreadyExistsError("output.dir " + dir + ": could not take " + path +
                                  " (other runs kept taking over its stale copy); try again");
}

std::string LiveLockOwner(const std::string& dir) {
  const nlohmann::json recorded = ReadOwner(dir + "/moa.lock");
  if (recorded.is_null() || !StaleReason(recorded).empty()) return "";
  return DescribeOwner(recorded);
}

RunLock::~RunLock() { unlink(path_.c_str()); }

}  // namespace moa::trainer
