// Collectives that autograd can differentiate through. AllReduceSum's backward all-reduces the
// incoming gradient, so that after data-parallel gradient averaging each rank's parameters get the
// gradient of the global quantity (used for MoA importance and load: docs/method.md,
// Load-balancing loss).
#pragma once

#include <torch/torch.h>

#include "parallel/communicator.h"

namespace moa::parallel {

/// The sum of `tensor` over `group`, differentiable; `group` may be null (identity).
torch::Tensor DifferentiableAllReduceSum(const torch::Tensor& tensor, Communicator* group);

}  // namespace moa::parallel

namespace moa::parallel {

/// all_to_all_v that autograd can differentiate through: rows [offset_j, offset_j + send_rows[j])
/// go to rank j; `recv_rows` must be what the peers send (exchanged beforehand). The backward
/// runs the transposed exchange (recv_rows back to send_rows).
torch::Tensor DifferentiableAllToAllV(const torch::Tensor& input,
                                      const std::vector<int64_t>& send_rows,
                                      const std::vector<int64_t>& recv_rows, Communicator* group);

}  // namespace moa::parallel
