// Output safety for a run directory (docs/architecture.md, Run files): a folder that holds a run
// (`done`, or a full-state checkpoint) is refused unless the run resumes it or
// output.overwrite = true, and a lock file (`moa.lock`: host, pid and Slurm job of its owner)
// keeps two live runs out of one folder. The lock is linked into place whole, so no process sees
// it half-written. A lock whose owner is gone is stale and taken over: on this host a pid that no
// longer runs, anywhere the same Slurm job and array task (a requeued task, perhaps on another
// node).
//
//   MOA_ASSIGN_OR_RETURN(std::unique_ptr<RunLock> lock, RunLock::Acquire(dir));
//   MOA_RETURN_IF_ERROR(CheckRunDirFree(dir, config));
#pragma once

#include <memory>
#include <string>

#include <absl/status/statusor.h>

#include "trainer/config.h"

namespace moa::trainer {

/// True when `dir` holds a run: `done` or checkpoints/state.safetensors.
bool HoldsRun(const std::string& dir);

/// OK when the configuration may write into output.dir: it holds no run, or this run resumes it
/// (train.resume names it), or output.overwrite is set (then the old run's results, `done` and
/// checkpoints are removed). The refusal names the folder and both ways out.
absl::Status ClaimRunDir(const RunConfig& config);

/// The live owner of `dir`/moa.lock ("host H, pid P[, Slurm job J]"), or "" when there is no lock
/// or its owner is gone. An owner on another host outside Slurm counts as live.
std::string LiveLockOwner(const std::string& dir);

class RunLock {
 public:
  /// Creates `dir`/moa.lock atomically (the folder is made if needed); an error names the live
  /// owner's host, pid and Slurm job when another run holds it.
  static absl::StatusOr<std::unique_ptr<RunLock>> Acquire(const std::string& dir);
  /// Removes the lock file.
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  explicit RunLock(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace moa::trainer
