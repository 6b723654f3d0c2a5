#include "trainer/run_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

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
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) {
      const bool written =
          write(fd, owner.data(), owner.size()) == static_cast<ssize_t>(owner.size());
      close(fd);
      if (!written) {
        unlink(path.c_str());
        return absl::UnavailableError("cannot write " + path + ": " + std::strerror(errno));
      }
      return std::unique_ptr<RunLock>(new RunLock(path));
    }
    if (errno != EEXIST) {
      return absl::UnavailableError("cannot create " + path + ": " + std::strerror(errno));
    }
    std::ifstream in(path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const nlohmann::json recorded =
        nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    const std::string stale =
        recorded.is_object() ? StaleReason(recorded) : std::string("it is unreadable");
    if (stale.empty()) {
      return absl::AlreadyExistsError(
          "output.dir " + dir + " is in use by another run (" + path + ": host " +
          recorded.value("host", "?") + ", pid " + std::to_string(recorded.value("pid", 0)) +
          (recorded.value("slurm", "").empty() ? ""
                                               : ", Slurm job " + recorded.value("slurm", "")) +
          "); if that run is gone, remove " + path);
    }
    Log(LogLevel::kWarning) << "taking over the stale lock " << path << " (" << stale << ")";
    unlink(path.c_str());
  }
  return absl::AlreadyExistsError("output.dir " + dir + ": another run took " + path +
                                  " while this one replaced its stale copy");
}

RunLock::~RunLock() { unlink(path_.c_str()); }

}  // namespace moa::trainer
