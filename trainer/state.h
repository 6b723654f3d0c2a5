// Full-state checkpoints for exact resume: the trainable tensors, Adam/AdamW state, the step,
// the global random generator and the model-selection state, in one safetensors file written
// atomically (checkpoints/state.safetensors). Data streams, router noise and dropout are keyed by
// step, so the step restores them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/torch.h>

#include "parallel/communicator.h"

namespace moa::trainer {

struct TrainState {
  int64_t step = -1;              // the last completed step
  double best_validation = -1.0;  // training-domain validation of the selected record
  /// Further state (SWAD's averages), saved and restored as they are.
  std::vector<std::pair<std::string, torch::Tensor>> extra_tensors;
  std::map<std::string, std::string> extra_metadata;
};

/// The key type of torch::optim's per-parameter state map (the parameter's TensorImpl).
using OptimizerStateKeyType =
    std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

/// Where torch::optim keeps a parameter's state: optimizer.state()[OptimizerStateKey(p)].
OptimizerStateKeyType OptimizerStateKey(const torch::Tensor& p);

/// Writes `named` (the trainable parameters by name), the optimizer's per-parameter state, the
/// global CPU generator state and `state` to `path`.
absl::Status SaveTrainState(const std::string& path,
                            const std::vector<std::pair<std::string, torch::Tensor>>& named,
                            torch::optim::Optimizer& optimizer, const TrainState& state);

/// Restores what SaveTrainState wrote into the same parameters and optimizer. A file from another
/// configuration (other adapter names or shapes) is refused with the differences named.
absl::StatusOr<TrainState> LoadTrainState(
    const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& named,
    torch::optim::Optimizer& optimizer);

/// Copies `params` and, with `optimizer`, their Adam/AdamW state from rank `root` of `group` to its
/// other ranks (every rank calls it): how the holder of sharded experts refreshes the copies the
/// other ranks keep for evaluation and checkpoints.
absl::Status BroadcastParameters(const std::vector<torch::Tensor>& params,
                                 torch::optim::Optimizer* optimizer, parallel::Communicator& group,
                                 int root);

}  // namespace moa::trainer
