#include "trainer/gradient_sync.h"

#include "common/status_macros.h"

namespace moa::trainer {

absl::StatusOr<std::unique_ptr<GradientSync>> GradientSync::Create(
    const std::vector<torch::Tensor>& trainable, const ExpertSharding* sharding,
    const parallel::Mesh& mesh, int64_t bucket_bytes) {
  auto sync = std::unique_ptr<GradientSync>(new GradientSync());
  for (const torch::Tensor& p : trainable) {
    if (sharding == nullptr || !sharding->IsShardedExpert(p)) {
      sync->shared_.push_back(p);
    } else if (sharding->Holds(p)) {
      sync->held_.push_back(p);
    }
  }
  sync->ep_ = static_cast<double>(mesh.layout().ep);
  sync->shared_sync_ = std::make_unique<parallel::GradientSynchronizer>(
      mesh.gradients(), sync->shared_, bucket_bytes);
  if (!sync->held_.empty()) {
    sync->expert_sync_ = std::make_unique<parallel::GradientSynchronizer>(
        mesh.expert_replicas(), sync->held_, bucket_bytes);
  }
  return sync;
}

absl::Status GradientSync::Finish() {
  MOA_RETURN_IF_ERROR(shared_sync_->Finish());
  last_wait_seconds_ = shared_sync_->last_wait_seconds();
  if (expert_sync_) {
    MOA_RETURN_IF_ERROR(expert_sync_->Finish());
    last_wait_seconds_ += expert_sync_->last_wait_seconds();
    torch::NoGradGuard no_grad;
    for (torch::Tensor& p : held_) p.mutable_grad().div_(ep_);
  }
  return absl::OkStatus();
}

}  // namespace moa::trainer
