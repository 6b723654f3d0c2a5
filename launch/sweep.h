// `moa sweep launch|list|delete_incomplete`: its command line, and launching, listing or deleting
// the jobs that sweep_jobs.h plans (docs/architecture.md, Sweeps and collect).
//
//   moa sweep launch --config configs/tiny.ini --data.test_envs single --n_hparams 4
//       --n_trials 2 --launcher slurm --output.dir sweeps/tiny --slurm.partition=gpu
#pragma once

#include <iostream>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "launch/sweep_jobs.h"

namespace moa::launch {

/// Parses the words after `moa sweep`; deprecation lines for old spellings go to `notes`.
absl::StatusOr<SweepOptions> ParseSweepArgs(const std::vector<std::string>& args,
                                            std::ostream& notes = std::cerr);

/// `moa sweep ...`; returns the exit code.
int RunSweepCommand(const std::vector<std::string>& args);

}  // namespace moa::launch
