// Data-parallel gradient averaging in buckets, overlapped with the backward pass
// (docs/architecture.md, One training step, steps 4 and 5). Hooks copy each trainable parameter's
// gradient into its bucket as autograd produces it; a bucket whose gradients are all in is handed
// to a communication thread (all-reduced on the backward thread with NCCL, queued on the group's
// stream as AllReduceDeferred so that the rest of backward runs beside it, or with an MPI that
// lacks MPI_THREAD_MULTIPLE), buckets always in the same order on every rank. Finish() (before the
// optimizer step) gives parameters that got no gradient on this rank zeros -- an expert no token
// chose still takes part, so no rank waits forever --, waits for every bucket and writes the
// averages back into .grad.
//
//   GradientSynchronizer sync(mesh.gradients(), trainable, /*bucket_bytes=*/4 << 20);
//   loss.backward();
//   MOA_RETURN_IF_ERROR(sync.Finish());
//   optimizer.step();
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <absl/status/status.h>
#include <torch/torch.h>

#include "parallel/communicator.h"

namespace moa::parallel {

class GradientSynchronizer {
 public:
  /// `group` outlives this object and is used only by it after construction, possibly from its
  /// communication thread (give it a communicator of its own, e.g. Mesh::gradients()).
  GradientSynchronizer(Communicator& group, std::vector<torch::Tensor> params,
                       int64_t bucket_bytes);
  ~GradientSynchronizer();
  GradientSynchronizer(const GradientSynchronizer&) = delete;
  GradientSynchronizer& operator=(const GradientSynchronizer&) = delete;

  /// Completes this step's averaging; afterwards every parameter has a defined .grad equal to
  /// the group average.
  absl::Status Finish();

  /// Seconds the last Finish() waited on the host for communication that had not overlapped
  /// with backward (near 0 with NCCL, whose collectives the GPU stream waits for instead).
  double last_wait_seconds() const { return last_wait_seconds_; }
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<int64_t> params;  // indices into params_
    std::vector<int64_t> offsets;
    torch::Tensor buffer;
    int64_t pending = 0;  // gradients still to arrive this step
    bool launched = false;
    bool done = false;
    absl::Status status;
  };
  void OnGradient(int64_t param, const torch::Tensor& grad);
  void LaunchReady();  // under mutex_
  void CommunicationLoop();
  void ResetStep();

  Communicator& group_;
  std::vector<torch::Tensor> params_;
  // NCCL queues collectives without waiting, and ranks must issue them on all groups in one
  // order; an MPI without MPI_THREAD_MULTIPLE must not run a collective beside the backward
  // thread's. Then buckets are launched from the backward thread, and no communication thread
  // runs.
  bool launch_inline_ = false;
  std::vector<int64_t> bucket_of_;
  std::vector<int64_t> slot_of_;
  std::vector<bool> arrived_;
  std::vector<Bucket> buckets_;
  int64_t next_launch_ = 0;
  std::deque<int64_t> queue_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stop_ = false;
  double last_wait_seconds_ = 0;
  std::thread thread_;
};

}  // namespace moa::parallel
