// The run's one gradient reduction (docs/architecture.md, One training step, step 5): it splits
// the trainable tensors into shared ones (averaged over every rank) and the sharded experts this
// rank holds (its holder summed their gradient over the tokens of its expert-parallel group; it
// is averaged over the expert's replicas and divided by ep), and Finish() completes both. Copies
// of experts held elsewhere get no gradient and no update.
//
//   MOA_ASSIGN_OR_RETURN(auto sync, GradientSync::Create(params, sharding.get(), *mesh, bytes));
//   loss.backward();
//   MOA_RETURN_IF_ERROR(sync->Finish());
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/torch.h>

#include "parallel/grad_sync.h"
#include "parallel/mesh.h"
#include "trainer/expert_sharding.h"

namespace moa::trainer {

class GradientSync {
 public:
  /// `sharding` is null without expert parallelism. Every rank calls it together.
  static absl::StatusOr<std::unique_ptr<GradientSync>> Create(
      const std::vector<torch::Tensor>& trainable, const ExpertSharding* sharding,
      const parallel::Mesh& mesh, int64_t bucket_bytes);

  /// After backward: every shared tensor and every held expert has its final gradient.
  absl::Status Finish();
  /// Seconds Finish() waited for communication that had not overlapped with backward.
  double last_wait_seconds() const { return last_wait_seconds_; }
  /// The tensors this rank updates: the shared ones, then the held experts.
  const std::vector<torch::Tensor>& shared() const { return shared_; }
  const std::vector<torch::Tensor>& held_experts() const { return held_; }

 private:
  GradientSync() = default;

  std::vector<torch::Tensor> shared_, held_;
  double ep_ = 1;
  std::unique_ptr<parallel::GradientSynchronizer> shared_sync_, expert_sync_;
  double last_wait_seconds_ = 0;
};

}  // namespace moa::trainer
