// The training loop (DomainBed's ERM protocol): every step takes one minibatch from each
// training domain, runs one forward and backward on their concatenation and an Adam/AdamW step
// on the trainable parameters; every checkpoint_freq steps and at the last step it evaluates every
// (domain, split), appends a record to results.jsonl, updates model selection and saves the
// selected adapters. `Pretrain` trains a whole classifier on one upright domain and saves its
// backbone for `moa train` to start from.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "moa/models.h"
#include "parallel/communicator.h"
#include "trainer/build.h"
#include "trainer/config.h"
#include "trainer/evaluate.h"

namespace moa::trainer {

struct RunSummary {
  std::vector<nlohmann::json> records;
  std::string selection_table;  // empty without a test env
  std::string run_dir;
};

/// Trains as the configuration says and writes the run directory (config.ini, env.json,
/// results.jsonl, checkpoints/, selection.txt, done).
/// With `world` (the job's communicator; null: this process alone) every rank calls Train; rank
/// 0 coordinates and alone writes the run files.
absl::StatusOr<RunSummary> Train(const RunConfig& config, parallel::Communicator* world = nullptr);

/// The status of a run that stopped on SIGUSR1 or SIGTERM (to any of its ranks) after saving its
/// full state, naming the step and how to continue; `moa` exits with kPreemptedExitCode
/// (common/stop_signals.h) for it.
absl::Status StoppedStatus(int64_t step, const std::string& run_dir);
bool IsStopped(const absl::Status& status);

/// Trains every parameter on the configured dataset (all its domains are training domains) and
/// writes output.dir/backbone.safetensors besides the run files.
absl::StatusOr<RunSummary> Pretrain(const RunConfig& config,
                                    parallel::Communicator* world = nullptr);

}  // namespace moa::trainer
