// Collective communication between the ranks of a job (docs/architecture.md, Interfaces): one
// interface with an MPI implementation for CPU tensors (always built), a single-process
// implementation for runs without a launcher, and, where CUDA and NCCL are found at configure time,
// an NCCL one on raw device pointers (nccl_communicator.h). Every collective must be called by all
// ranks of the group, in the same order; a failure comes back as a Status naming the operation and
// the rank.
//
//   std::unique_ptr<Communicator> world = MakeWorldCommunicator();  // mpi_communicator.h
//   MOA_RETURN_IF_ERROR(world->AllReduce(grad, ReduceOp::kAverage));
//   std::vector<int64_t> recv_rows;
//   MOA_ASSIGN_OR_RETURN(torch::Tensor got, world->AllToAllV(tokens, send_rows, &recv_rows));
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <torch/torch.h>

#include "parallel/reduce_op.h"

namespace moa::parallel {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend_name() const = 0;

  /// Reduces `tensor` (contiguous; float32, float64, int64, int32 or uint8 on every backend) in
  /// place over the group.
  virtual absl::Status AllReduce(torch::Tensor& tensor, ReduceOp op) = 0;
  /// AllReduce whose result work queued afterwards on the caller's GPU stream may not see until
  /// WaitForDeferred(): on NCCL the collective runs on the group's own stream without the compute
  /// stream waiting for it, so the rest of backward overlaps it; `tensor` must not be written
  /// before then. Every other backend finishes it here, as AllReduce does.
  virtual absl::Status AllReduceDeferred(torch::Tensor& tensor, ReduceOp op) {
    return AllReduce(tensor, op);
  }
  /// Makes the caller's stream wait for every AllReduceDeferred queued so far.
  virtual absl::Status WaitForDeferred() { return absl::OkStatus(); }
  /// Every rank's `tensor` (same shape everywhere), stacked along a new first dimension.
  virtual absl::StatusOr<torch::Tensor> AllGather(const torch::Tensor& tensor) = 0;
  /// Copies root's `tensor` into every rank's `tensor` (same shape and dtype everywhere).
  virtual absl::Status Broadcast(torch::Tensor& tensor, int root) = 0;
  /// Sends rows [offset_j, offset_j + send_rows[j]) of `input` to rank j and returns the rows
  /// received, ordered by source rank; the counts travel first, and `recv_rows` (when given)
  /// receives how many rows came from each rank. All rows have input's trailing shape.
  virtual absl::StatusOr<torch::Tensor> AllToAllV(const torch::Tensor& input,
                                                  const std::vector<int64_t>& send_rows,
                                                  std::vector<int64_t>* recv_rows) = 0;
  virtual absl::Status Barrier() = 0;
  /// Ranks with the same `color` form a new group, ordered by `key`.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) = 0;
};

/// The group of one process: every collective is the identity.
std::unique_ptr<Communicator> MakeSelfCommunicator();

/// Row offsets of a split table: offsets[j] = sum of counts[0..j).
std::vector<int64_t> Offsets(const std::vector<int64_t>& counts);

}  // namespace moa::parallel
