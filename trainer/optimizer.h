// The optimizer of a run: torch::optim's Adam or AdamW (optim.optimizer), whose per-parameter
// state trainer/state.h saves, resumes and copies between expert holders, stepped either by
// ATen's fused kernel for all tensors at once (optim.fused, PyTorch's `fused=True`) or by
// torch::optim's own per-tensor update. A `skip` flag on the device (1 when the step's loss was
// not finite) leaves weights and moments untouched without a host read, as AMP's gradient scaler
// does.
//
//   auto optimizer = MakeOptimizer(config.optim, params);
//   StepOptimizer(*optimizer, config.optim.fused, skip);
#pragma once

#include <memory>
#include <vector>

#include <torch/torch.h>

#include "trainer/config.h"

namespace moa::trainer {

/// Adam or AdamW over `params` with optim.lr and optim.weight_decay.
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const OptimConfig& config,
                                                       const std::vector<torch::Tensor>& params);

/// One update of every parameter that has a gradient. `skip` (a one-element float tensor on the
/// parameters' device, or undefined) set to 1 leaves weights and moments as they were; the
/// per-tensor path reads it on the host. The fused path does not, so its host step counts still
/// advance on a skipped step; no checkpoint keeps such a count, because a skipped step stops the
/// run at the next host read of the flag (trainer/loss_meter.h), which comes before any checkpoint.
void StepOptimizer(torch::optim::Optimizer& optimizer, bool fused, const torch::Tensor& skip);

}  // namespace moa::trainer
