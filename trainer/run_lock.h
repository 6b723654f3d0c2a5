// Output safety for a run directory (docs/architecture.md, Run files): a folder that holds a run
// (`done`, or a full-state checkpoint) is refused unless the run resumes it or
// output.overwrite = true, and a lock file (`moa.lock`: host, pid and Slurm job of its owner)
// keeps two live runs out of one folder. The lock is linked into place whole, so no process sees
// it half-written. A lock whose owner is gone is stale and taken over: on this host a pid that
// no longer runs, or this process's pid (in its pid namespace) where this process does not hold
// it; anywhere, the same Slurm job and array task after a requeue (a higher SLURM_RESTART_COUNT,
// perhaps on another node). Takeovers are serialised by an flock of moa.lock.takeover and remove
// only the very file judged stale (device, inode and contents), so of several processes starting
// at once exactly one gets the folder.
//
//   MOA_ASSIGN_OR_RETURN(std::unique_ptr<RunLock> lock, RunLock::Acquire(dir));
//   MOA_RETURN_IF_ERROR(CheckRunDirFree(dir, config));
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
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

/// A file's identity: the same name may later hold another file (which may even get the same
/// inode number, so the lock also compares contents).
struct FileId {
  uint64_t device = 0;
  uint64_t inode = 0;
  bool operator==(const FileId& other) const {
    return device == other.device && inode == other.inode;
  }
};

/// Who holds a run folder's lock.
struct LockOwner {
  std::string host;         // empty when the lock cannot be read
  std::string slurm;        // the owner's Slurm job and array task, or empty
  std::string description;  // "host H, pid P[, Slurm job J]", or why the lock cannot be read
};

/// The owner of `dir`/moa.lock while it may still run, or nullopt when there is no lock or its
/// owner is gone. An owner on another host counts as live, and so does a lock this process cannot
/// read.
std::optional<LockOwner> LiveLockOwner(const std::string& dir);

class RunLock {
 public:
  /// Creates `dir`/moa.lock atomically (the folder is made if needed); an error names the live
  /// owner's host, pid and Slurm job when another run holds it.
  static absl::StatusOr<std::unique_ptr<RunLock>> Acquire(const std::string& dir);
  /// Removes the lock file, if it is still the one this lock created.
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  RunLock(std::string path, FileId id, std::string text)
      : path_(std::move(path)), id_(id), text_(std::move(text)) {}
  std::string path_;
  FileId id_;         // the lock file this run created
  std::string text_;  // and its owner record
};

}  // namespace moa::trainer
