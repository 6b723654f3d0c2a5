#include "moa/routing.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "common/splitmix.h"
#include "moa/autocast.h"
#include "parallel/autograd_collectives.h"
#include "parallel/device.h"

namespace moa {
namespace {

torch::Tensor CoefficientOfVariationSquared(const torch::Tensor& v) {
  return v.var(/*unbiased=*/true) / (v.mean().pow(2) + 1e-10);
}

// Capacity: each expert keeps its first ceil(factor * T * k / E) assignments of the global batch,
// in global token order (a token's slots in order). Over a data-parallel group every rank learns
// all ranks' choices and their rows in the global batch, so it keeps exactly what one process
// holding the whole batch would keep.
torch::Tensor KeepWithinCapacity(const torch::Tensor& local_chosen, double capacity_factor,
                                 int64_t experts, const RoutingContext& context,
                                 int64_t tokens_per_sample) {
  const torch::Tensor chosen = local_chosen.contiguous();
  const int64_t tokens = chosen.size(0), k = chosen.size(1);
  const int64_t samples = tokens / tokens_per_sample;
  parallel::Communicator* group = context.batch_group;
  const int ranks = group != nullptr ? group->size() : 1;
  torch::Tensor rows =
      context.global_rows.empty()
          ? torch::arange(samples, torch::kInt64) + (group != nullptr ? group->rank() : 0) * samples
          : torch::tensor(context.global_rows, torch::kInt64);
  TORCH_CHECK(rows.numel() == samples, "routing: the step context names ", rows.numel(),
              " rows of the global batch but the layer sees ", samples, " samples");
  torch::Tensor all_chosen = chosen.unsqueeze(0), all_rows = rows.unsqueeze(0);
  if (ranks > 1) {
    auto gathered_chosen = group->AllGather(chosen);
    TORCH_CHECK(gathered_chosen.ok(), std::string(gathered_chosen.status().message()));
    auto gathered_rows = group->AllGather(rows);
    TORCH_CHECK(gathered_rows.ok(), std::string(gathered_rows.status().message()));
    all_chosen = *gathered_chosen;
    all_rows = *gathered_rows;
  }
  const int64_t capacity =
      static_cast<int64_t>(std::ceil(capacity_factor * tokens * ranks * k / experts));
  // Every (rank, local sample) in global row order.
  std::vector<std::pair<int64_t, int64_t>> order;
  const int64_t* row = all_rows.data_ptr<int64_t>();
  for (int64_t i = 0; i < all_rows.numel(); ++i) order.emplace_back(row[i], i);
  std::sort(order.begin(), order.end());
  const int64_t* id = all_chosen.data_ptr<int64_t>();
  const int me = ranks > 1 ? group->rank() : 0;
  std::vector<int64_t> used(experts, 0);
  torch::Tensor kept = torch::zeros({tokens, k}, torch::kBool);
  bool* kept_ptr = kept.data_ptr<bool>();
  for (const auto& [global_row, flat] : order) {
    const int64_t rank = flat / samples, sample = flat % samples;
    for (int64_t p = 0; p < tokens_per_sample; ++p) {
      const int64_t t = sample * tokens_per_sample + p;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = id[(rank * tokens + t) * k + j];
        const bool keep = used[e] < capacity;
        if (keep) ++used[e];
        if (rank == me) kept_ptr[t * k + j] = keep;
      }
    }
  }
  return kept;
}

// The cosine router's expert keys: the columns of sim_matrix at unit length.
torch::Tensor UnitKeys(const torch::Tensor& sim_matrix) {
  namespace F = torch::nn::functional;
  return F::normalize(sim_matrix, F::NormalizeFuncOptions().dim(0).eps(1e-12));
}

// The cosine similarities' scale: exp(temperature), the temperature clamped at log(100).
torch::Tensor CosineLogitScale(const torch::Tensor& temperature) {
  return torch::exp(torch::clamp_max(temperature, std::log(100.0)));
}

}  // namespace

uint64_t RandomKey(std::initializer_list<int64_t> parts) {
  uint64_t key = 0x4d6f41ULL;
  for (int64_t p : parts) key = SplitMix64(key ^ SplitMix64(static_cast<uint64_t>(p)));
  return key;
}

RouterImpl::RouterImpl(const RouterOptions& options) : options_(options) {
  if (options.kind() == "cosine") {
    proj = register_module("proj", torch::nn::Linear(options.in_features(), options.proj_dim()));
    sim_matrix = register_parameter(
        "sim_matrix", torch::randn({options.proj_dim(), options.num_experts()}) * 0.01);
    temperature = register_parameter("temperature", torch::full({1}, std::log(2.0)));
  } else {
    TORCH_CHECK(options.kind() == "linear", "moa.router must be cosine or linear, not ",
                options.kind());
    proj = register_module("proj", torch::nn::Linear(options.in_features(), options.num_experts()));
  }
}

torch::Tensor RouterImpl::Logits(const torch::Tensor& x) {
  // moa.fp32_gate: the router in float32 even inside a bf16 autocast forward.
  std::optional<AutocastOff> full_precision;
  if (options_.fp32()) full_precision.emplace(x.device());
  torch::Tensor input = options_.fp32() ? x.to(torch::kFloat32) : x;
  return LogitsFromProjection(proj->forward(input));
}

torch::Tensor RouterImpl::LogitsFromProjection(const torch::Tensor& projection) {
  if (options_.kind() == "linear") return projection;
  namespace F = torch::nn::functional;
  const torch::Tensor projected =
      F::normalize(projection, F::NormalizeFuncOptions().dim(1).eps(1e-12));
  return CosineLogitScale(temperature) * torch::matmul(projected, UnitKeys(sim_matrix));
}

torch::Tensor RouterImpl::ScaledKeys() const {
  TORCH_CHECK(options_.kind() == "cosine", "ScaledKeys: the linear router has no keys");
  return CosineLogitScale(temperature) * UnitKeys(sim_matrix);
}

torch::Tensor RouterNoise(const RoutingContext& context, int64_t layer, int64_t tokens,
                          int64_t experts, int64_t tokens_per_sample) {
  const int64_t local_samples = tokens / tokens_per_sample;
  const int64_t global_samples = context.global_batch > 0 ? context.global_batch : local_samples;
  auto generator =
      at::make_generator<at::CPUGeneratorImpl>(RandomKey({context.seed, context.step, layer}));
  torch::Tensor noise =
      at::normal(0.0, 1.0, {global_samples, tokens_per_sample, experts}, generator);
  if (!context.global_rows.empty()) {
    noise = noise.index_select(0, torch::tensor(context.global_rows, torch::kInt64));
  }
  return noise.reshape({tokens, experts});
}

Routing Route(const torch::Tensor& clean_logits, const RouteOptions& options,
              const RoutingContext& context, int64_t layer, int64_t tokens_per_sample,
              bool training) {
  Routing r;
  const int64_t tokens = clean_logits.size(0);
  const int64_t experts = clean_logits.size(1);
  const int64_t k = options.top_k;
  r.clean_logits = clean_logits;
  torch::Tensor logits = clean_logits;
  if (training && options.noise) {
    const torch::Tensor noise =
        parallel::ToDeviceAsync(RouterNoise(context, layer, tokens, experts, tokens_per_sample),
                                clean_logits.device())
            .to(clean_logits.scalar_type());
    logits = logits + noise / static_cast<double>(experts);
  }
  // Quirks kept on purpose (docs/method.md, Quirks Q6 and Q8): in training the router always sees
  // noise (moa.noise = false turns it off), and the gate is the winner's noisy softmax probability,
  // not renormalised (moa.renormalize = true renormalises the top-k). Unlike the reference, top_k
  // and capacity are honoured rather than stored and ignored.
  r.probs = torch::softmax(logits, 1);
  auto [top_values, top_indices] = r.probs.topk(k, 1);
  r.experts = top_indices;
  r.top_probs = top_values;
  r.gates = options.renormalize ? top_values / top_values.sum(1, true) : top_values;

  torch::Tensor kept;  // on the host, where capacity or the expert lists need it
  if (training && options.capacity_factor > 0) {
    kept = KeepWithinCapacity(r.experts.cpu(), options.capacity_factor, experts, context,
                              tokens_per_sample);
    r.dropped = tokens * k - kept.sum().item<int64_t>();
    r.kept = parallel::ToDeviceAsync(kept, clean_logits.device());
  } else {
    r.kept = torch::ones({tokens, k}, clean_logits.options().dtype(torch::kBool));
  }
  r.expert_counts =
      torch::zeros({experts}, clean_logits.options().dtype(torch::kInt64))
          .scatter_add_(0, r.experts.reshape({-1}), r.kept.reshape({-1}).to(torch::kInt64));
  if (options.expert_lists) {
    const torch::Tensor assignment_ids = r.experts.cpu();
    const int64_t* ids = assignment_ids.data_ptr<int64_t>();
    if (!kept.defined()) kept = torch::ones({tokens, k}, torch::kBool);
    const bool* kept_ptr = kept.data_ptr<bool>();
    std::vector<std::vector<int64_t>> token_lists(experts), slot_lists(experts);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        if (!kept_ptr[t * k + j]) continue;
        token_lists[ids[t * k + j]].push_back(t);
        slot_lists[ids[t * k + j]].push_back(j);
      }
    }
    for (int64_t e = 0; e < experts; ++e) {
      r.expert_tokens.push_back(parallel::IndicesOn(token_lists[e], clean_logits.device()));
      r.expert_slots.push_back(parallel::IndicesOn(slot_lists[e], clean_logits.device()));
    }
  }
  const torch::Tensor kept_gates =
      r.dropped > 0 ? r.gates * r.kept.to(r.gates.scalar_type()) : r.gates;
  r.combine = torch::zeros_like(r.probs).scatter_add(1, r.experts, kept_gates);
  return r;
}

// Quirks kept on purpose (docs/method.md, Quirks Q7): the threshold is a noisy probability compared
// with clean probabilities, the variance is unbiased, and the coefficient is applied here, per
// layer; the trainer sums the layers' terms. sigma is 1 / E where the reference hard-codes E = 4
// (the same value for its four experts).
torch::Tensor ImportanceLoadLoss(const Routing& routing, int64_t top_k, double weight,
                                 parallel::Communicator* group) {
  const torch::Tensor clean =
      routing.clean_probs.defined() ? routing.clean_probs : torch::softmax(routing.clean_logits, 1);
  const torch::Tensor local_importance = clean.sum(0);
  torch::Tensor local_load;
  if (routing.load_terms.defined()) {
    TORCH_CHECK(top_k == 1, "the fused gate's load terms are those of top-1 routing");
    local_load = routing.load_terms.sum(0);
  } else {
    // The threshold is the k-th largest noisy probability (the winner's for top-1), as the
    // reference compares clean probabilities against it (docs/method.md, Quirks Q7).
    const torch::Tensor top = routing.top_probs.defined() && routing.top_probs.size(1) >= top_k
                                  ? routing.top_probs
                                  : std::get<0>(routing.probs.topk(top_k, 1));
    const torch::Tensor threshold = top.select(1, top_k - 1).unsqueeze(1);
    const double sigma = 1.0 / static_cast<double>(routing.clean_logits.size(1));
    const torch::Tensor z = (clean - threshold) / sigma;
    local_load = (0.5 * (1.0 + torch::erf(z / std::sqrt(2.0)))).sum(0);
  }
  const torch::Tensor both =
      parallel::DifferentiableAllReduceSum(torch::stack({local_importance, local_load}), group);
  return weight *
         (CoefficientOfVariationSquared(both[0]) + CoefficientOfVariationSquared(both[1])) / 2.0;
}

torch::Tensor SwitchLoss(const Routing& routing, double weight, parallel::Communicator* group) {
  const int64_t experts = routing.clean_logits.size(1);
  const torch::Tensor clean =
      routing.clean_probs.defined() ? routing.clean_probs : torch::softmax(routing.clean_logits, 1);
  const torch::Tensor first = routing.experts.select(1, 0);
  // Per expert over the global batch: first-choice counts, probability sums, and the token count.
  const torch::Tensor counts = torch::zeros({experts}, clean.options())
                                   .scatter_add(0, first, torch::ones_like(first, clean.options()));
  const torch::Tensor tokens =
      torch::full({experts}, static_cast<double>(clean.size(0)), clean.options());
  const torch::Tensor sums =
      parallel::DifferentiableAllReduceSum(torch::stack({counts, clean.sum(0), tokens}), group);
  const torch::Tensor total = sums[2];
  return weight * static_cast<double>(experts) * ((sums[0] / total) * (sums[1] / total)).sum();
}

}  // namespace moa
