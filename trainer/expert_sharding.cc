#include "trainer/expert_sharding.h"

#include "common/logging.h"
#include "common/status_macros.h"
#include "moa/expert_placement.h"
#include "trainer/state.h"

namespace moa::trainer {

absl::StatusOr<std::unique_ptr<ExpertSharding>> ExpertSharding::Create(
    const std::vector<std::shared_ptr<MoaAdapterImpl>>& layers, const parallel::Mesh& process_mesh,
    const ExpertShardingOptions& options) {
  const parallel::MeshLayout& mesh = process_mesh.layout();
  parallel::Communicator& world = process_mesh.world();
  auto sharding = std::unique_ptr<ExpertSharding>(new ExpertSharding());
  sharding->layers_ = layers;
  sharding->ep_rank_ = static_cast<int>(mesh.ep_rank());
  sharding->ep_group_ = &process_mesh.ep_group();
  if (options.mode == "auto") {
    // A configured link rate replaces the collective measurements (latency then 20 us).
    sharding->rates_ = MeasureMachineRates(world, /*links=*/options.link_gb_per_s <= 0,
                                           options.device, options.bf16, options.fused_adam);
    if (options.gflops > 0) sharding->rates_.flops_per_s = options.gflops * 1e9;
    if (options.link_gb_per_s > 0) {
      sharding->rates_.link_bytes_per_s = sharding->rates_.all_to_all_bytes_per_s =
          options.link_gb_per_s * 1e9;
      sharding->rates_.latency_s = 20e-6;
    }
  }
  // Every layer's placement and estimate; rank 0's choices are everyone's.
  std::vector<ExpertLayerPlan> plans;
  std::vector<int64_t> choices;
  for (const auto& layer : layers) {
    ExpertLayerPlan plan;
    std::vector<int64_t> costs;
    for (int64_t e = 0; e < layer->num_experts(); ++e) {
      costs.push_back(static_cast<int64_t>(ExpertFlopsPerToken(*layer, e)));
    }
    auto owner = PartitionExperts(costs, static_cast<int>(mesh.ep));
    if (!owner.ok()) {
      return absl::InvalidArgumentError(
          "parallel.ep = " + std::to_string(mesh.ep) + " cannot shard MoA layer " +
          std::to_string(layer->layer()) + ": " + std::string(owner.status().message()));
    }
    plan.owner = *owner;
    if (options.mode == "auto") {
      ExpertLayerShape shape = ShapeOf(*layer, options.tokens_per_rank, options.bf16);
      shape.refresh_every_step = options.refresh_every_step;
      plan.estimate = EstimateExpertModes(shape, mesh.dp, mesh.ep, plan.owner, sharding->rates_);
      choices.push_back(plan.estimate.choose_sharded() ? 1 : 0);
    } else {
      choices.push_back(options.mode == "sharded" ? 1 : 0);
    }
    plans.push_back(std::move(plan));
  }
  torch::Tensor chosen = torch::tensor(choices, torch::kInt64);
  MOA_RETURN_IF_ERROR(world.Broadcast(chosen, 0));
  const bool lead = world.rank() == 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& layer = layers[l];
    ExpertLayerPlan& plan = plans[l];
    plan.sharded = chosen[static_cast<int64_t>(l)].item<int64_t>() == 1;
    if (plan.sharded) {
      layer->set_expert_parallel({sharding->ep_group_, plan.owner});
      for (int64_t e = 0; e < layer->num_experts(); ++e) {
        for (const torch::Tensor& p : layer->expert(e)->parameters()) {
          sharding->sharded_.insert(Key(p));
          if (plan.owner[e] == mesh.ep_rank()) sharding->held_.insert(Key(p));
        }
      }
    }
    if (lead) {
      std::string placement;
      for (int o : plan.owner) placement += (placement.empty() ? "" : ",") + std::to_string(o);
      Log(LogLevel::kInfo) << "MoA layer " << layer->layer() << " (" << layer->in_features()
                           << " -> " << layer->out_features() << ", experts on ep ranks "
                           << placement << "): "
                           << (options.mode == "auto" ? plan.estimate.Describe()
                                                      : options.mode + " (parallel.expert_mode)");
    }
  }
  sharding->plans_ = std::move(plans);
  return sharding;
}

absl::Status ExpertSharding::Refresh(torch::optim::Optimizer* optimizer) {
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (!plans_[l].sharded) continue;
    for (int64_t e = 0; e < layers_[l]->num_experts(); ++e) {
      MOA_RETURN_IF_ERROR(BroadcastParameters(layers_[l]->expert(e)->parameters(), optimizer,
                                              *ep_group_, plans_[l].owner[e]));
    }
  }
  return absl::OkStatus();
}

void ExpertSharding::ForgetForeignState(torch::optim::Optimizer& optimizer) const {
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (!plans_[l].sharded) continue;
    for (int64_t e = 0; e < layers_[l]->num_experts(); ++e) {
      if (plans_[l].owner[e] == ep_rank_) continue;
      for (const torch::Tensor& p : layers_[l]->expert(e)->parameters()) {
        optimizer.state().erase(OptimizerStateKey(p));
      }
    }
  }
}

}  // namespace moa::trainer
