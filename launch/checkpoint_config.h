// The configuration an adapter checkpoint was trained with (its metadata's `moa_config`): what
// `moa eval`, `moa predict` and `moa export` build the model from when no --config is given, and
// the check that a --config given builds the model the checkpoint was trained as.
//
//   MOA_ASSIGN_OR_RETURN(LaunchConfig config,
//                        ConfigForCheckpoints(config_path, overrides, adapters,
//                                             /*split_notes=*/true, std::cerr));
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "launch/options.h"

namespace moa::launch {

/// The keys whose values shape what a checkpoint of `config`'s adapter.method computes in
/// evaluation: the ViT's shape keys, the method's adapter keys (LoRA: rank, alpha, blocks,
/// targets; KAdaptation: rank, blocks, targets, phm_dim; MoA: blocks, targets, the experts and
/// routing), and train.seed where the frozen backbone is random (it draws its weights).
/// Training-only keys (noise, losses, dropout, capacity), the computation's layout (moa.dispatch,
/// moa.fp32_gate) and model.num_classes (the head's shape says it) are not among them.
std::vector<std::string> ModelKeys(const LaunchConfig& config);

/// The configuration for evaluating or exporting `adapters` (checkpoints moa wrote):
/// - without `config_path`, the first adapter's stored configuration with `overrides` applied and
///   the process keys (parallel.*, train.threads, data.workers) at their defaults (an adapter
///   that stores none is an error asking for --config);
/// - with it, that file with `overrides`.
/// Every adapter that stores its configuration must then agree with the result on ModelKeys and
/// on whether the backbone is random, except keys that `overrides` set (a deliberate change); a
/// disagreement is an error naming each key with the checkpoint's value and the one given. Lines
/// go to `notes` when an adapter was trained on another backbone file or dataset, and with
/// `split_notes` (for an evaluation) on other in/out splits of the same dataset (its `out`
/// accuracies then include training images).
absl::StatusOr<LaunchConfig> ConfigForCheckpoints(const std::string& config_path,
                                                  const std::vector<std::string>& overrides,
                                                  const std::vector<std::string>& adapters,
                                                  bool split_notes, std::ostream& notes);

}  // namespace moa::launch
