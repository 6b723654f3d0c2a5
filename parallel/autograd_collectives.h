// Collectives that autograd can differentiate through. AllReduceSum's backward all-reduces the
// incoming gradient, so that after data-parallel gradient averaging each rank's parameters get
// the gradient of the global quantity (used for MoA importance and load, DESIGN.md section 3).
#pragma once

#include <torch/torch.h>

#include "parallel/communicator.h"

namespace moa::parallel {

/// The sum of `tensor` over `group`, differentiable; `group` may be null (identity).
torch::Tensor DifferentiableAllReduceSum(const torch::Tensor& tensor, Communicator* group);

}  // namespace moa::parallel
