// The Mixture-of-Adapters layer (docs/method.md, Mixture-of-Adapters layer; its contract in
// docs/architecture.md, Interfaces): several experts of different capacities (LoRA ranks, or
// Kronecker inner ranks) beside a frozen Linear, a router that sends each token to its top-k
// experts, and y = W0 x + b0 + sum over the chosen experts of gate * expert(x) (+ the layer's bias
// adapter for Kronecker experts).
//
// `dispatch = routed`: each expert runs only on the tokens routed to it (gather, compute,
// scatter-add with the gate). `dispatch = stacked` (LoRA experts): every expert's down-projection
// and the router's projection in one GEMM, the rank columns weighted by their expert's gate (zero
// where not routed), one up-projection GEMM: exact, with no gather, no host work and two large
// kernels instead of several small ones per expert. `auto` (the default) is stacked for LoRA
// experts unless they are sharded over expert-parallel ranks, else routed. `dispatch = dense`
// computes every expert on every token and masks, as the reference does, and is the test oracle. In
// training the layer records its load-balancing loss (the coefficient applied inside) and routing
// statistics.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "moa/adapters.h"
#include "moa/kronecker.h"
#include "moa/routing.h"

namespace moa {

/// The [moa] configuration section.
struct MoaConfig {
  std::string expert = "lora";  // lora, kronecker
  std::vector<int64_t> ranks = {1, 2, 4, 8};
  int64_t top_k = 1;
  std::string router = "cosine";  // cosine, linear
  int64_t proj_dim = 256;
  bool noise = true;
  bool renormalize = false;
  bool fp32_gate = false;
  double capacity_factor = 0;
  bool aux_loss = false;
  double aux_weight = 0.01;
  std::string aux_type = "importance_load";  // importance_load (the reference), switch
  std::string dispatch = "auto";  // auto, routed, stacked, dense (the reference's computation)
  int64_t phm_dim = 64;
  double kron_dropout = 0.5;
};

/// Routing statistics accumulated over training forwards since the last Reset.
struct RouterStats {
  std::vector<int64_t> assignments;  // kept (token, expert) assignments per expert
  int64_t dropped = 0;
  double aux_sum = 0;
  int64_t forwards = 0;
};

/// Where a layer's forward time goes (accumulated until ResetTimings): routing, dispatch (the
/// gather, or the counts and token all-to-alls), the experts, and combine (the return all-to-all
/// and the gate-weighted scatter), plus the token bytes this rank sent to other ranks. The
/// backward pass moves the same bytes again in the other direction.
struct DispatchTimings {
  double route_s = 0, dispatch_s = 0, experts_s = 0, combine_s = 0;
  int64_t bytes_sent = 0;
  int64_t forwards = 0;
};

/// Expert parallelism for one layer: the expert-parallel group and the rank of it that holds
/// each expert (PartitionExperts). In training only the holder computes (and gets gradients
/// for) its experts, tokens travelling with all_to_all_v; every rank keeps a copy of every
/// expert, which the trainer refreshes from the holders before evaluating or saving, and
/// evaluation runs the experts locally.
struct ExpertParallel {
  parallel::Communicator* group = nullptr;
  std::vector<int> owner;
};

class MoaAdapterImpl : public AdapterImpl {
 public:
  /// `layer` keys this layer's noise and dropout; `rules` is the model's shared Kronecker rule
  /// (needed for Kronecker experts only).
  MoaAdapterImpl(int64_t in_features, int64_t out_features, const MoaConfig& config, int64_t layer,
                 std::shared_ptr<const RoutingContext> context,
                 std::shared_ptr<KroneckerRulesImpl> rules);
  torch::Tensor Delta(const torch::Tensor& x) override;
  std::string kind() const override { return "moa"; }

  /// The auxiliary loss of the last training forward (weighted), undefined otherwise.
  const torch::Tensor& aux_loss() const { return aux_loss_; }
  /// The statistics so far (reads the device-side counters: a host synchronisation).
  RouterStats stats() const;
  void ResetStats();
  /// Continues from `stats` (a resumed run's interval); the expert count must match.
  void RestoreStats(const RouterStats& stats);
  const DispatchTimings& timings() const { return timings_; }
  void ResetTimings() { timings_ = DispatchTimings(); }
  /// Shards the experts over `ep.group` (routed dispatch).
  void set_expert_parallel(ExpertParallel ep) {
    TORCH_CHECK(config_.dispatch == "routed" || config_.dispatch == "auto",
                "expert parallelism needs moa.dispatch = routed or auto");
    ep_ = std::move(ep);
  }
  const ExpertParallel& expert_parallel() const { return ep_; }
  int64_t layer() const { return layer_; }
  int64_t num_experts() const { return static_cast<int64_t>(experts_.size()); }
  const std::shared_ptr<AdapterImpl>& expert(int64_t e) const { return experts_.at(e); }
  const MoaConfig& config() const { return config_; }
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  /// The routing of the last forward (for tests and statistics).
  const Routing& last_routing() const { return last_routing_; }
  /// Whether a forward in this mode runs the stacked computation (moa.dispatch).
  bool UsesStackedExperts(bool training) const;

  Router router{nullptr};
  torch::Tensor bias;  // Kronecker experts' layer bias adapter

 private:
  /// Runs the experts where they live: tokens grouped by the rank holding their expert go there
  /// with all_to_all_v (counts first), the holder runs its experts, the outputs come back with
  /// the inverse exchange and are combined with the gates, which never leave the token's rank.
  torch::Tensor ShardedExperts(
      const torch::Tensor& tokens, const Routing& routing,
      const std::vector<std::function<torch::Tensor(const torch::Tensor&)>>& apply);

  /// The routed (or dense, or sharded) computation: routes `tokens` and returns the experts'
  /// gated sum (T x out).
  torch::Tensor RoutedExperts(const torch::Tensor& tokens, const RouteOptions& route,
                              int64_t tokens_per_sample, bool training, Routing* routing);
  /// The stacked computation: routes `tokens` and returns the experts' gated sum (T x out).
  torch::Tensor StackedExperts(const torch::Tensor& tokens, const RouteOptions& route,
                               int64_t tokens_per_sample, bool training, Routing* routing);
  /// LoRA experts `experts` as one grouped product over `rows`, row i belonging to
  /// experts[row_expert[i]]: one GEMM through every listed expert's A, each row keeping only its
  /// own expert's rank columns (times row_scale[i] where defined), one GEMM through the Bs.
  /// Equal to running each expert on its rows; an expert with no row gets a zero gradient.
  torch::Tensor GroupedLora(const torch::Tensor& rows, const std::vector<int64_t>& experts,
                            const torch::Tensor& row_expert, const torch::Tensor& row_scale) const;
  /// Adds this forward's routing to the statistics, on the device.
  void CountRouting(const Routing& routing);

  MoaConfig config_;
  int64_t layer_;
  int64_t in_features_;
  int64_t out_features_;
  ExpertParallel ep_;
  std::shared_ptr<const RoutingContext> context_;
  std::vector<std::shared_ptr<AdapterImpl>> experts_;
  torch::Tensor aux_loss_;
  /// Host part of the statistics (dropped assignments and forwards; its assignments and aux_sum
  /// are unused): per-expert assignments and the auxiliary loss sum accumulate on the device, in
  /// `assigned_` and `aux_total_` (float64, starting from a restored run's values, so the sums are
  /// those of the host loop they replace).
  RouterStats stats_;
  torch::Tensor assigned_;
  torch::Tensor aux_total_;
  /// For the stacked computation: each rank column's expert.
  torch::Tensor column_expert_;
  DispatchTimings timings_;
  Routing last_routing_;
};

}  // namespace moa
