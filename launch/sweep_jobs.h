// The plan of `moa sweep` (docs/architecture.md, Sweeps and collect): DomainBed's job list,
// trials x datasets x methods x test-environment sets x hyper-parameter draws. A job's id is the
// md5 of its arguments and names its run directory under the sweep directory; a job is done when
// that directory holds `done`, incomplete when it exists without it, and not launched when it
// does not exist.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "launch/options.h"

namespace moa::launch {

/// What `moa sweep` was asked to do.
struct SweepOptions {
  std::string command;                // launch, list or delete_incomplete
  std::string config;                 // the base configuration, absolute (may be empty)
  std::vector<std::string> datasets;  // empty: the configuration's dataset
  std::vector<std::string> methods;   // empty: the configuration's adapter.method
  std::string test_envs = "pairs";    // single, pairs, or a list such as 0,1+2
  int64_t n_hparams_from = 0;         // draws [n_hparams_from, n_hparams)
  int64_t n_hparams = 20;
  int64_t n_trials = 3;
  std::string launcher = "local";      // local, mpirun or slurm
  std::string output_dir;              // the sweep directory (--output.dir), absolute
  int64_t max_parallel = 1;            // local and mpirun: jobs running at once
  int64_t np = 2;                      // mpirun: ranks per job
  std::string gpus = "auto";           // local and mpirun: GPUs for the jobs (auto, none, a list)
  std::string mpirun = "mpirun";       // mpirun: the command and its own flags
  std::string moa;                     // the moa executable, absolute (default: this one)
  bool dry_run = false;                // slurm: write the script without submitting it
  std::vector<std::string> overrides;  // section.key=value for every job
};

/// One training run of the sweep.
struct SweepJob {
  std::string id;   // md5 of the arguments (hex)
  std::string dir;  // output_dir/id
  std::string dataset;
  std::string method;
  std::vector<int64_t> test_envs;
  int64_t hparams_seed = 0;
  int64_t trial_seed = 0;
  /// The arguments of `moa train` (after the word train), --output.dir last.
  std::vector<std::string> train_args;

  /// "RotatedFashionMNIST lora test_envs=0,1 hparams_seed=3 trial_seed=0"
  std::string Describe() const;
};

enum class JobState { kNotLaunched, kIncomplete, kDone };
const char* JobStateName(JobState state);

/// The configuration every job starts from: the file and the user's overrides ([slurm] included).
absl::StatusOr<LaunchConfig> LoadSweepBase(const SweepOptions& options);

/// The number of ranks each job runs on: 1 with the local launcher (one process), --np with
/// mpirun, slurm.nodes x slurm.ntasks_per_node with Slurm (srun starts a rank per task).
int64_t JobWorldSize(const SweepOptions& options, const SlurmConfig& slurm);

/// The test-environment sets of a specification for a dataset of `n_envs` environments:
/// "single" (each environment alone), "pairs" (DomainBed's default: each environment, each
/// followed by its pairs with later ones, as leave-one-domain-out selection needs), or a comma
/// list of sets whose environments are joined by '+' ("0,5" or "0,0+1").
absl::StatusOr<std::vector<std::vector<int64_t>>> TestEnvSets(const std::string& spec,
                                                              int64_t n_envs);

/// The jobs in DomainBed's order (trial, dataset, method, test envs, draw). Every job's
/// configuration is loaded and checked, so a bad option fails here, naming the job; so does a
/// job that cannot start on JobWorldSize ranks (parallel.dp x parallel.ep set to another world,
/// parallel.ep not dividing it, a data.batch_size that does not divide among them). Drawn batch
/// sizes are multiples of the world size.
absl::StatusOr<std::vector<SweepJob>> MakeSweepJobs(const SweepOptions& options);

JobState StateOf(const SweepJob& job);

/// What moa itself keeps in a sweep directory besides the runs' folders: the Slurm scripts and
/// logs, `moa collect`'s tables and the sweep's lock file.
const std::set<std::string>& SweepDirectoryFiles();

/// The arguments of `moa` that run a job now: `train --resume DIR` when its run directory holds a
/// full-state checkpoint (a killed or requeued job continues), else `train` + train_args.
std::vector<std::string> RunArgs(const SweepJob& job);

}  // namespace moa::launch
