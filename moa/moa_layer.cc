#include "moa/moa_layer.h"

#include <ATen/autocast_mode.h>

#include <functional>

#include "common/timer.h"
#include "moa/dispatch.h"
#include "moa/fused_gate.h"
#include "parallel/autograd_collectives.h"
#include "parallel/device.h"

namespace moa {
namespace {

// x's rows in the order `perm`, a permutation of all rows. Its gradient is the gradient's rows in
// the order `inverse` (a gather), where index_select's own backward zero-fills a tensor and
// scatter-adds into it.
struct PermuteRows : torch::autograd::Function<PermuteRows> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& perm, const torch::Tensor& inverse) {
    ctx->save_for_backward({inverse});
    return x.index_select(0, perm);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor inverse = ctx->get_saved_variables()[0];
    return {grads[0].index_select(0, inverse), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

MoaAdapterImpl::MoaAdapterImpl(int64_t in_features, int64_t out_features, const MoaConfig& config,
                               int64_t layer, std::shared_ptr<const RoutingContext> context,
                               std::shared_ptr<KroneckerRulesImpl> rules)
    : config_(config),
      layer_(layer),
      in_features_(in_features),
      out_features_(out_features),
      context_(std::move(context)) {
  TORCH_CHECK(!config.ranks.empty(), "moa.ranks is empty");
  TORCH_CHECK(config.top_k >= 1 && config.top_k <= static_cast<int64_t>(config.ranks.size()),
              "moa.top_k must lie in [1, number of experts]");
  const int64_t experts = static_cast<int64_t>(config.ranks.size());
  router = register_module("router", Router(RouterOptions(in_features, experts)
                                                .kind(config.router)
                                                .proj_dim(config.proj_dim)
                                                .fp32(config.fp32_gate)));
  auto list = register_module("experts", std::make_shared<torch::nn::Module>());
  for (int64_t e = 0; e < experts; ++e) {
    std::shared_ptr<AdapterImpl> expert;
    if (config.expert == "lora") {
      expert = std::make_shared<LoraImpl>(LoraOptions(in_features, out_features, config.ranks[e]));
    } else {
      TORCH_CHECK(config.expert == "kronecker", "moa.expert must be lora or kronecker");
      TORCH_CHECK(rules != nullptr, "Kronecker experts need the model's shared rule");
      expert = std::make_shared<KroneckerImpl>(
          KroneckerOptions(in_features, out_features, config.ranks[e])
              .bias(false)
              .dropout(config.kron_dropout),
          rules);
    }
    experts_.push_back(list->register_module(std::to_string(e), expert));
  }
  if (config.expert == "kronecker") bias = register_parameter("bias", torch::zeros({out_features}));
  ResetStats();
}

void MoaAdapterImpl::ResetStats() {
  RouterStats zero;
  zero.assignments.assign(experts_.size(), 0);
  RestoreStats(zero);
}

void MoaAdapterImpl::RestoreStats(const RouterStats& stats) {
  TORCH_CHECK(stats.assignments.size() == experts_.size(), "MoA layer ", layer_, ": statistics of ",
              stats.assignments.size(), " experts for ", experts_.size());
  stats_ = stats;
  assigned_ = torch::tensor(stats.assignments, torch::kInt64);
  aux_total_ = torch::tensor(stats.aux_sum, torch::kFloat64);
}

RouterStats MoaAdapterImpl::stats() const {
  RouterStats stats = stats_;
  const torch::Tensor assigned = assigned_.cpu();
  for (size_t e = 0; e < stats.assignments.size(); ++e) {
    stats.assignments[e] = assigned[static_cast<int64_t>(e)].item<int64_t>();
  }
  stats.aux_sum = aux_total_.item<double>();
  return stats;
}

void MoaAdapterImpl::CountRouting(const Routing& routing) {
  const torch::Device device = routing.expert_counts.device();
  if (assigned_.device() != device) {
    assigned_ = assigned_.to(device);
    aux_total_ = aux_total_.to(device);
  }
  assigned_.add_(routing.expert_counts);
  aux_total_.add_(aux_loss_.detach().to(torch::kFloat64));
  stats_.dropped += routing.dropped;
  ++stats_.forwards;
}

bool MoaAdapterImpl::UsesStackedExperts(bool training) const {
  if (config_.expert != "lora") return false;
  if (config_.dispatch == "stacked") return true;
  const bool sharded = training && ep_.group != nullptr && ep_.group->size() > 1;
  return config_.dispatch == "auto" && !sharded;
}

torch::Tensor MoaAdapterImpl::StackedExperts(const torch::Tensor& tokens, const RouteOptions& route,
                                             int64_t tokens_per_sample, bool training,
                                             Routing* routing) {
  const int64_t experts = num_experts();
  std::vector<torch::Tensor> down, up;
  for (int64_t e = 0; e < experts; ++e) {
    // MoA's LoRA experts are built with scale 1 (the reference's), so B A x needs no factor.
    const auto* lora = static_cast<const LoraImpl*>(experts_[e].get());
    down.push_back(lora->A);
    up.push_back(lora->B);
  }
  if (!column_expert_.defined() || column_expert_.device() != tokens.device()) {
    std::vector<int64_t> column_expert;
    for (int64_t e = 0; e < experts; ++e)
      column_expert.insert(column_expert.end(), down[e].size(0), e);
    column_expert_ = torch::tensor(column_expert, torch::kInt64).to(tokens.device());
  }
  const int64_t columns = column_expert_.numel();

  Stopwatch clock;
  // One GEMM for the router's projection and every expert's down-projection, unless the router
  // must run in float32 inside a lower-precision forward.
  torch::Tensor logits, low;
  if (!router->options().fp32()) {
    const torch::Tensor& proj_weight = router->proj->weight;
    const torch::Tensor& proj_bias = router->proj->bias;
    down.insert(down.begin(), proj_weight);
    const torch::Tensor bias =
        torch::cat({proj_bias, torch::zeros({columns}, proj_bias.options())});
    const torch::Tensor both = torch::linear(tokens, torch::cat(down), bias);
    const int64_t projected = proj_weight.size(0);
    // Top-1 cosine routing without capacity (the paper's) runs as one fused function on the CPU.
    const bool fused = router->options().kind() == "cosine" && route.top_k == 1 &&
                       !route.renormalize && (route.capacity_factor == 0 || !training) &&
                       FusedGateSupports(both);
    if (fused) {
      torch::Tensor noise;
      if (training && route.noise) {
        noise = RouterNoise(*context_, layer_, tokens.size(0), experts, tokens_per_sample)
                    .to(both.options()) /
                static_cast<double>(experts);
      }
      FusedGate gate = FusedCosineGate(both, projected, router->ScaledKeys(), noise, column_expert_,
                                       /*aux=*/training);
      Routing& r = *routing;
      r.clean_logits = gate.clean_logits;
      r.probs = gate.probs;
      r.experts = gate.experts;
      r.top_probs = gate.gates;
      r.gates = gate.gates;
      r.kept = torch::ones({tokens.size(0), 1}, tokens.options().dtype(torch::kBool));
      r.combine = gate.combine;
      r.expert_counts = torch::bincount(gate.experts.reshape({-1}), {}, experts);
      r.clean_probs = gate.clean_probs;
      r.load_terms = gate.load_terms;
      timings_.route_s += clock.Seconds();
      clock.Reset();
      const torch::Tensor y = torch::linear(gate.gated, torch::cat(up, 1));
      timings_.experts_s += clock.Seconds();
      return y;
    }
    logits = router->LogitsFromProjection(both.narrow(1, 0, projected));
    low = both.narrow(1, projected, columns);
  } else {
    logits = router->Logits(tokens);
    low = torch::linear(tokens, torch::cat(down));
  }
  RouteOptions options = route;
  options.expert_lists = false;
  *routing = Route(logits, options, *context_, layer_, tokens_per_sample, training);
  timings_.route_s += clock.Seconds();
  clock.Reset();
  // Each rank column weighted by its expert's gate: zero where the token was not routed there.
  const torch::Tensor column_gates = routing->combine.index_select(1, column_expert_);
  const torch::Tensor y = torch::linear(low * column_gates, torch::cat(up, 1));
  timings_.experts_s += clock.Seconds();
  return y;
}

torch::Tensor MoaAdapterImpl::GroupedLora(const torch::Tensor& rows,
                                          const std::vector<int64_t>& experts,
                                          const torch::Tensor& row_expert,
                                          const torch::Tensor& row_scale) const {
  std::vector<torch::Tensor> down, up;
  std::vector<int64_t> column_expert;
  for (size_t m = 0; m < experts.size(); ++m) {
    // MoA's LoRA experts are built with scale 1 (the reference's), so B A x needs no factor.
    const auto* lora = static_cast<const LoraImpl*>(experts_[experts[m]].get());
    down.push_back(lora->A);
    up.push_back(lora->B);
    column_expert.insert(column_expert.end(), lora->A.size(0), static_cast<int64_t>(m));
  }
  const torch::Tensor low = torch::linear(rows, torch::cat(down));
  const torch::Tensor columns = parallel::IndicesOn(column_expert, rows.device());
  torch::Tensor keep = row_expert.unsqueeze(1).eq(columns.unsqueeze(0)).to(low.scalar_type());
  // The gates multiply in their own dtype (float32 under autocast too), as in the stacked path.
  if (row_scale.defined()) keep = keep * row_scale.unsqueeze(1);
  return torch::linear(low * keep, torch::cat(up, 1));
}

torch::Tensor MoaAdapterImpl::Delta(const torch::Tensor& x) {
  const bool training = is_training();
  const int64_t in_features = x.size(-1);
  const torch::Tensor tokens = x.reshape({-1, in_features});
  const int64_t tokens_per_sample = x.dim() == 3 ? x.size(1) : 1;

  RouteOptions route;
  route.top_k = config_.top_k;
  route.noise = config_.noise;
  route.renormalize = config_.renormalize;
  route.capacity_factor = config_.capacity_factor;
  // The dense computation weights every expert by the combine matrix: no token lists to build.
  route.expert_lists = config_.dispatch != "dense";
  ++timings_.forwards;
  Routing routing;
  torch::Tensor y;
  if (UsesStackedExperts(training)) {
    y = StackedExperts(tokens, route, tokens_per_sample, training, &routing);
  } else {
    y = RoutedExperts(tokens, route, tokens_per_sample, training, &routing);
  }
  if (bias.defined()) y = y + bias;

  if (training) {
    if (config_.aux_type == "switch") {
      aux_loss_ = SwitchLoss(routing, config_.aux_weight, context_->batch_group);
    } else {
      aux_loss_ =
          ImportanceLoadLoss(routing, config_.top_k, config_.aux_weight, context_->batch_group);
    }
    CountRouting(routing);
  } else {
    aux_loss_ = torch::Tensor();
  }
  last_routing_ = std::move(routing);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = y.size(1);
  return y.reshape(shape);
}

torch::Tensor MoaAdapterImpl::RoutedExperts(const torch::Tensor& tokens, const RouteOptions& route,
                                            int64_t tokens_per_sample, bool training,
                                            Routing* routing_out) {
  Stopwatch clock;
  *routing_out =
      Route(router->Logits(tokens), route, *context_, layer_, tokens_per_sample, training);
  const Routing& routing = *routing_out;
  timings_.route_s += clock.Seconds();

  // Each expert's computation for this forward; Kronecker experts with dropout build H once (with
  // the step's mask keyed by (seed, step, layer, expert)), without it they never build H.
  const int64_t experts = num_experts();
  std::vector<std::function<torch::Tensor(const torch::Tensor&)>> apply(experts);
  for (int64_t e = 0; e < experts; ++e) {
    if (auto kron = std::dynamic_pointer_cast<KroneckerImpl>(experts_[e])) {
      const uint64_t key = RandomKey({context_->seed, context_->step, layer_, e});
      apply[e] = [kron, training, key](const torch::Tensor& in) {
        return kron->Apply(in, training, key);
      };
    } else {
      AdapterImpl* expert = experts_[e].get();
      apply[e] = [expert](const torch::Tensor& in) { return expert->Delta(in); };
    }
  }

  torch::Tensor y;
  if (config_.dispatch == "dense") {
    // The reference: every expert on every token, weighted by the (mostly zero) combine matrix.
    for (int64_t e = 0; e < experts; ++e) {
      const torch::Tensor contribution =
          apply[e](tokens) * routing.combine.select(1, e).unsqueeze(1);
      y = y.defined() ? y + contribution : contribution;
    }
  } else if (training && ep_.group != nullptr && ep_.group->size() > 1) {
    y = ShardedExperts(tokens, routing, apply);
  } else {
    // Group the kept assignments by expert with one gather, run the experts (LoRA ones as one
    // grouped product, Kronecker ones each on its contiguous chunk), weight by the gates and
    // scatter back with one index_add.
    std::vector<torch::Tensor> ids, slots;
    for (int64_t e = 0; e < experts; ++e) {
      ids.push_back(routing.expert_tokens[e]);
      slots.push_back(routing.expert_slots[e]);
    }
    clock.Reset();
    const torch::Tensor order = torch::cat(ids);
    // Top-1 without drops sends every token once: `order` is a permutation, and both the gather
    // and the scatter back are permutations of rows whose gradients are the inverse permutations.
    const bool permutation = config_.top_k == 1 && order.numel() == tokens.size(0);
    torch::Tensor inverse;
    if (permutation) {
      inverse = torch::empty_like(order).scatter_(0, order,
                                                  torch::arange(order.numel(), order.options()));
    }
    const torch::Tensor gathered =
        permutation ? PermuteRows::apply(tokens, order, inverse) : tokens.index_select(0, order);
    timings_.dispatch_s += clock.Seconds();
    clock.Reset();
    torch::Tensor weighted;
    if (config_.expert == "lora") {
      std::vector<int64_t> all(experts), expert_of_row;
      expert_of_row.reserve(static_cast<size_t>(order.numel()));
      for (int64_t e = 0; e < experts; ++e) {
        all[e] = e;
        expert_of_row.insert(expert_of_row.end(), ids[e].numel(), e);
      }
      const torch::Tensor row_expert = parallel::IndicesOn(expert_of_row, order.device());
      const torch::Tensor gates = routing.gates.index({order, torch::cat(slots)});
      weighted = GroupedLora(gathered, all, row_expert, gates);
    } else if (order.numel() > 0) {
      std::vector<torch::Tensor> outputs;
      int64_t offset = 0;
      for (int64_t e = 0; e < experts; ++e) {
        const int64_t count = ids[e].numel();
        if (count > 0) outputs.push_back(apply[e](gathered.narrow(0, offset, count)));
        offset += count;
      }
      const torch::Tensor gates = routing.gates.index({order, torch::cat(slots)}).unsqueeze(1);
      weighted = torch::cat(outputs) * gates;
    }
    timings_.experts_s += clock.Seconds();
    clock.Reset();
    if (!weighted.defined()) {
      // Every assignment was dropped: the adapters add nothing.
      y = torch::zeros({tokens.size(0), out_features_}, tokens.options());
    } else {
      y = permutation ? PermuteRows::apply(weighted, inverse, order)
                      : torch::zeros({tokens.size(0), weighted.size(1)}, weighted.options())
                            .index_add(0, order, weighted);
    }
    timings_.combine_s += clock.Seconds();
  }
  return y;
}

torch::Tensor MoaAdapterImpl::ShardedExperts(
    const torch::Tensor& tokens, const Routing& routing,
    const std::vector<std::function<torch::Tensor(const torch::Tensor&)>>& apply) {
  parallel::Communicator* group = ep_.group;
  const int ranks = group->size();
  const int me = group->rank();
  const int64_t experts = num_experts();
  Stopwatch clock;
  std::vector<int64_t> tokens_per_expert;
  for (int64_t e = 0; e < experts; ++e)
    tokens_per_expert.push_back(routing.expert_tokens[e].numel());
  const SendPlan send = PlanSend(tokens_per_expert, ep_.owner, ranks);
  std::vector<torch::Tensor> ids, slots;
  for (int64_t e : send.expert_order) {
    ids.push_back(routing.expert_tokens[e]);
    slots.push_back(routing.expert_slots[e]);
  }
  // Counts first: each holder learns how many rows of each of its experts every rank sends.
  auto received = group->AllToAllV(torch::tensor(send.counts, torch::kInt64).reshape({-1, 1}),
                                   send.count_rows, nullptr);
  TORCH_CHECK(received.ok(), std::string(received.status().message()));
  const std::vector<int64_t> local = LocalExperts(ep_.owner, me);
  const torch::Tensor counts = received->to(torch::kCPU).contiguous();
  const int64_t* count = counts.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> table(ranks, std::vector<int64_t>(local.size()));
  for (int s = 0; s < ranks; ++s) {
    for (size_t m = 0; m < local.size(); ++m) table[s][m] = count[s * local.size() + m];
  }
  const ReceivePlan plan = PlanReceive(table);
  const std::vector<int64_t>& send_rows = send.send_rows;
  const std::vector<int64_t>& recv_rows = plan.recv_rows;

  // Under autocast both exchanges move the autocast dtype. The experts' outputs are in it, and
  // their first operation on a token (LoRA's down-projection, the Kronecker products) casts it
  // there anyway: casting before sending changes no value and halves a float32 token's bytes,
  // and the backward pass sends the token gradients back in the same dtype. One dtype on every
  // rank, so each exchange sends and receives the same bytes whether or not tokens reached it.
  const c10::DeviceType device_type = tokens.device().type();
  const torch::ScalarType exchange_dtype = at::autocast::is_autocast_enabled(device_type)
                                               ? at::autocast::get_autocast_dtype(device_type)
                                               : tokens.scalar_type();
  const torch::Tensor order = torch::cat(ids);
  const torch::Tensor arrived = parallel::DifferentiableAllToAllV(
      tokens.index_select(0, order).to(exchange_dtype), send_rows, recv_rows, group);
  timings_.dispatch_s += clock.Seconds();
  clock.Reset();
  const int64_t element_bytes = static_cast<int64_t>(c10::elementSize(exchange_dtype));
  for (int r = 0; r < ranks; ++r) {
    if (r == me) continue;
    timings_.bytes_sent +=
        (send_rows[r] * tokens.size(1) + recv_rows[r] * out_features_) * element_bytes;
  }
  const std::vector<std::vector<int64_t>>& rows_of = plan.rows_of;
  const int64_t row = plan.total_rows;
  torch::Tensor computed;
  if (config_.expert == "lora" && !local.empty()) {
    // The rows arrive grouped by sender, each sender's by expert: one grouped product over all.
    std::vector<int64_t> row_expert(row);
    for (size_t m = 0; m < local.size(); ++m) {
      for (int64_t r : rows_of[m]) row_expert[r] = static_cast<int64_t>(m);
    }
    computed = GroupedLora(arrived, local, parallel::IndicesOn(row_expert, tokens.device()),
                           torch::Tensor())
                   .to(exchange_dtype);
  } else {
    std::vector<torch::Tensor> outputs, positions;
    for (size_t m = 0; m < local.size(); ++m) {
      if (rows_of[m].empty()) continue;  // no rank sent this expert a token
      const torch::Tensor at = parallel::IndicesOn(rows_of[m], tokens.device());
      outputs.push_back(apply[local[m]](arrived.index_select(0, at)));
      positions.push_back(at);
    }
    computed = torch::zeros({row, out_features_}, tokens.options().dtype(exchange_dtype));
    if (!outputs.empty()) {
      computed =
          computed.index_copy(0, torch::cat(positions), torch::cat(outputs).to(exchange_dtype));
    }
  }
  if (!computed.requires_grad() && torch::GradMode::is_enabled()) {
    // No token reached this rank's experts, but both exchanges must still run backward here, as
    // on every rank: the empty result is made to depend on what arrived (nothing) or, where that
    // needs no gradient, to want one itself.
    if (arrived.requires_grad()) {
      computed = computed + arrived.sum();
    } else {
      computed.requires_grad_(true);
    }
  }
  timings_.experts_s += clock.Seconds();
  clock.Reset();
  // The inverse exchange brings every token's expert output home, in the send order.
  const torch::Tensor returned =
      parallel::DifferentiableAllToAllV(computed, recv_rows, send_rows, group);
  const torch::Tensor gates = routing.gates.index({order, torch::cat(slots)}).unsqueeze(1);
  const torch::Tensor weighted = returned * gates;
  torch::Tensor y = torch::zeros({tokens.size(0), out_features_}, weighted.options())
                        .index_add(0, order, weighted);
  timings_.combine_s += clock.Seconds();
  return y;
}

}  // namespace moa
