// The launchers of `moa sweep`: local and mpirun run each job as a child process (`moa train`,
// or `mpirun -np N moa train`), N at a time, with its output in the run directory's out.txt and
// err.txt; slurm writes one job-array sbatch script that a person can read and edit and submits
// it with sbatch.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "launch/options.h"
#include "launch/sweep_jobs.h"

namespace moa::launch {

/// `text` as one shell word: unchanged when it holds only characters no shell treats specially,
/// else in single quotes (a single quote inside becomes '\'').
std::string ShellQuote(const std::string& text);

/// The GPUs `moa sweep` hands to local and mpirun jobs for `option` (SweepOptions::gpus): auto is
/// CUDA_VISIBLE_DEVICES's entries when it is set (none when it is empty), else 0 to the number of
/// GPUs LibTorch sees minus one; none is no GPU (jobs inherit the environment as it is); else the
/// comma-separated list.
std::vector<std::string> SweepGpus(const std::string& option);

/// CUDA_VISIBLE_DEVICES for the job in `slot` (0 to max_parallel - 1, each running job holding
/// its own) that runs `ranks` ranks: `ranks` consecutive entries of `gpus` from slot x ranks,
/// wrapping around (jobs share GPUs only when max_parallel x ranks exceeds the list). "" when
/// `gpus` is empty.
std::string SlotGpus(const std::vector<std::string>& gpus, int64_t slot, int64_t ranks);

/// Runs the jobs (local: `moa`, mpirun: `<options.mpirun> -np <options.np> moa`), at most
/// options.max_parallel at once, and waits for all of them; returns how many failed. With GPUs
/// (SweepGpus) each running job gets its slot's CUDA_VISIBLE_DEVICES (SlotGpus), printed on its
/// "started" line.
int RunJobsAsProcesses(const std::vector<SweepJob>& jobs, const SweepOptions& options);

/// The sbatch script of a job array with one task per job. Each task skips a done run, resumes a
/// run that holds a full-state checkpoint (a requeued or restarted task) and otherwise starts it
/// with `srun --mpi=<slurm.mpi> <moa> train ...`. Errors name the [slurm] key whose value no
/// #SBATCH line can carry.
absl::StatusOr<std::string> SlurmScript(const std::vector<SweepJob>& jobs,
                                        const SweepOptions& options, const SlurmConfig& slurm);

/// Writes the script to output_dir/slurm/sweep-<time>.sbatch and, unless options.dry_run, submits
/// it with `sbatch --parsable`, prints the Slurm job id and records each run's array task
/// (JOBID_INDEX) in its run directory's slurm_task file; returns the script's path. An error means
/// nothing was submitted.
absl::StatusOr<std::string> LaunchOnSlurm(const std::vector<SweepJob>& jobs,
                                          const SweepOptions& options, const SlurmConfig& slurm);

/// Whether squeue lists Slurm job or array task `task` (pending or running; false for a job that
/// has ended and that Slurm still knows); nullopt when squeue cannot tell (not installed, no
/// controller, a job it does not know) or `task` is not a plain job id.
std::optional<bool> SlurmTaskListed(const std::string& task);

/// The Slurm array task recorded in `run_dir`/slurm_task when squeue still lists it (pending or
/// running), else "" (no record, no squeue, or the task has ended).
std::string QueuedSlurmTask(const std::string& run_dir);

/// The Slurm array task recorded in `run_dir`/slurm_task ("" when there is none).
std::string RecordedSlurmTask(const std::string& run_dir);

}  // namespace moa::launch
