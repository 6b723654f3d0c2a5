// Expert parallelism in the training loop (docs/architecture.md, One training step, steps 2 and 5,
// and Interfaces): the expert-parallel group, each MoA layer's mode (sharded or replicated, by
// parallel.expert_mode and the planner's estimate) and expert placement, which expert parameters
// this rank updates, and the refresh that copies sharded experts from their holders to every rank
// before evaluation and checkpoints, so checkpoints have the same layout at any ep.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/torch.h>

#include "moa/expert_planner.h"
#include "moa/moa_layer.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"

namespace moa::trainer {

struct ExpertShardingOptions {
  std::string mode = "auto";  // auto, sharded, replicated
  int64_t tokens_per_rank = 0;
  /// Configured rates (0: measure at start-up).
  double link_gb_per_s = 0;
  double gflops = 0;
  /// Sharded experts are refreshed on every rank after each step (SWAD, replica checks).
  bool refresh_every_step = false;
  /// Where and in which precision the run trains: the rates are measured so.
  torch::Device device = torch::kCPU;
  bool bf16 = false;
  /// Training updates through ATen's fused Adam/AdamW kernel (optim.fused): the planner times it.
  bool fused_adam = false;
};

/// One MoA layer's plan.
struct ExpertLayerPlan {
  bool sharded = false;
  std::vector<int> owner;  // expert -> rank of the expert-parallel group
  ExpertModeEstimate estimate;
};

class ExpertSharding {
 public:
  /// Plans every layer for `mesh` (ep > 1) and hands the sharded ones its ep group. Every rank of
  /// the mesh's world calls it (the rates are measured together).
  static absl::StatusOr<std::unique_ptr<ExpertSharding>> Create(
      const std::vector<std::shared_ptr<MoaAdapterImpl>>& layers, const parallel::Mesh& mesh,
      const ExpertShardingOptions& options);

  /// True for an expert parameter of a sharded layer (held here or elsewhere).
  bool IsShardedExpert(const torch::Tensor& p) const { return sharded_.count(Key(p)) > 0; }
  /// True for an expert parameter of a sharded layer that this rank holds and updates.
  bool Holds(const torch::Tensor& p) const { return held_.count(Key(p)) > 0; }
  /// Copies every sharded expert, and with `optimizer` its optimizer state, from its holder to
  /// the other ranks of the expert-parallel group.
  absl::Status Refresh(torch::optim::Optimizer* optimizer);
  /// Drops the optimizer state Refresh copied for experts held elsewhere (once the checkpoint is
  /// written), so a rank keeps optimizer state only for what it updates.
  void ForgetForeignState(torch::optim::Optimizer& optimizer) const;
  const std::vector<ExpertLayerPlan>& plans() const { return plans_; }
  const MachineRates& rates() const { return rates_; }

 private:
  static const void* Key(const torch::Tensor& p) { return p.unsafeGetTensorImpl(); }

  parallel::Communicator* ep_group_ = nullptr;  // the mesh's
  std::vector<std::shared_ptr<MoaAdapterImpl>> layers_;
  std::vector<ExpertLayerPlan> plans_;
  std::set<const void*> sharded_, held_;
  int ep_rank_ = 0;
  MachineRates rates_;
};

}  // namespace moa::trainer
