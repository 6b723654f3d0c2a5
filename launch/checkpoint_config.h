// The configuration an adapter checkpoint was trained with (its metadata's `moa_config`): what
// `moa eval`, `moa predict` and `moa export` build the model from when no --config is given, and
// the check that a --config given builds the model the checkpoint was trained as.
//
//   MOA_ASSIGN_OR_RETURN(LaunchConfig config,
//                        ConfigForCheckpoints(config_path, overrides, adapters, std::cerr));
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "launch/options.h"

namespace moa::launch {

/// The keys whose values shape what a trained model computes in evaluation: every model.* and
/// adapter.* key, moa's expert and routing keys, and train.seed where model.backbone = random
/// (it draws the frozen weights). Training-only keys (noise, losses, dropout, capacity) and how
/// the computation is laid out (moa.dispatch, moa.fp32_gate) are not among them.
std::vector<std::string> ModelKeys(const LaunchConfig& config);

/// The configuration for evaluating or exporting `adapters` (checkpoints moa wrote):
/// - without `config_path`, the first adapter's stored configuration with `overrides` applied (an
///   adapter that stores none is an error asking for --config);
/// - with it, that file with `overrides`.
/// Every adapter that stores its configuration must then agree with the result on ModelKeys,
/// except keys that `overrides` set (a deliberate change); a disagreement is an error naming
/// each key with the checkpoint's value and the one given. A line goes to `notes` when an
/// adapter was trained on the same dataset with other in/out splits (trial seed, seed, holdout
/// fraction, images per domain, source): its `out` accuracies then include training images.
absl::StatusOr<LaunchConfig> ConfigForCheckpoints(const std::string& config_path,
                                                  const std::vector<std::string>& overrides,
                                                  const std::vector<std::string>& adapters,
                                                  std::ostream& notes);

}  // namespace moa::launch
