// Token routing for Mixture-of-Adapters layers (docs/method.md, Router, Routing, Capacity and
// Load-balancing loss): the cosine (or linear) top-k router, keyed router noise, the top-k choice
// with gate weights and capacity, and the load-balancing losses. The step context carries what
// keyed randomness needs, so that noise and dropout masks are the same whether the global batch
// runs on one rank or is split over many.
//
//   auto ctx = std::make_shared<RoutingContext>();  // owned by the trainer, read by the layers
//   ctx->seed = 0; ctx->step = 42;                   // the trainer's, before each forward
//   Routing r = Route(router->Logits(x), RouteOptions{...}, *ctx, layer, training);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "parallel/communicator.h"

namespace moa {

/// What keyed randomness needs to know about the current step. The trainer owns one per run,
/// hands it to the MoA layers when it builds the model (ApplyPeft), and updates it before every
/// forward; the layers only read it.
struct RoutingContext {
  int64_t seed = 0;
  int64_t step = 0;
  /// Samples in the global batch; 0 means the local batch is the global batch.
  int64_t global_batch = 0;
  /// For each local sample, its row in the global batch (empty: identity).
  std::vector<int64_t> global_rows;
  /// The ranks whose slices make up the global batch, over which importance and load are summed:
  /// every rank of the run, data- and expert-parallel alike (null: this process alone).
  parallel::Communicator* batch_group = nullptr;
};

/// A 64-bit key from (seed, step, layer[, expert]) for torch CPU generators.
uint64_t RandomKey(std::initializer_list<int64_t> parts);

struct RouterOptions {
  RouterOptions(int64_t in_features, int64_t num_experts)
      : in_features_(in_features), num_experts_(num_experts) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, num_experts);
  /// "cosine" (the reference's CosineTopKGate) or "linear" (a plain Linear to the experts).
  TORCH_ARG(std::string, kind) = "cosine";
  TORCH_ARG(int64_t, proj_dim) = 256;
  /// Compute the router in float32 whatever the input dtype.
  TORCH_ARG(bool, fp32) = false;
};

/// The cosine router: logit_e = exp(min(t, ln 100)) * <Px / |Px|, S_e / |S_e|>, with P a Linear
/// to proj_dim (PyTorch's default init), S (proj_dim x E) ~ N(0, 0.01) and t initialised to ln 2.
/// The linear router is logit = W x + b.
class RouterImpl : public torch::nn::Module {
 public:
  explicit RouterImpl(const RouterOptions& options);
  /// Clean logits, (T x E) for tokens x (T x in_features).
  torch::Tensor Logits(const torch::Tensor& x);
  /// The same from `proj`'s output, for callers that computed it inside a larger product (the
  /// stacked MoA layer shares one GEMM between `proj` and its experts' down-projections).
  torch::Tensor LogitsFromProjection(const torch::Tensor& projected);
  /// The cosine router's keys times its scale, exp(min(t, ln 100)) * S_e / |S_e| (proj_dim x E),
  /// so that logit_e = <Px / |Px|, ScaledKeys()_e> (FusedCosineGate's input).
  torch::Tensor ScaledKeys() const;
  const RouterOptions& options() const { return options_; }

  torch::nn::Linear proj{nullptr};
  torch::Tensor sim_matrix;
  torch::Tensor temperature;

 private:
  RouterOptions options_;
};
TORCH_MODULE(Router);

struct RouteOptions {
  int64_t top_k = 1;
  bool noise = true;         // Gaussian noise of std 1/E on the logits, in training only
  bool renormalize = false;  // gates = top-k probabilities / their sum (else the raw ones)
  /// 0: never drop; else, in training, each expert keeps its first ceil(factor * T * k / E)
  /// assignments, T the tokens of the global batch (over RoutingContext::batch_group), in global
  /// token order. Evaluation keeps every assignment, so scores do not depend on how the
  /// evaluation batches are cut or sharded.
  double capacity_factor = 0;
  /// Build Routing::expert_tokens and expert_slots (host work and one small tensor per expert).
  /// Computations that only need `combine` turn this off.
  bool expert_lists = true;
};

/// The outcome of routing T tokens over E experts.
struct Routing {
  torch::Tensor clean_logits;  // T x E
  torch::Tensor probs;         // T x E, softmax of the (noisy in training) logits
  torch::Tensor experts;       // T x k int64: chosen experts, best first
  torch::Tensor top_probs;     // T x k: their probabilities (before any renormalisation)
  torch::Tensor gates;  // T x k: their gate weights (carry the router's gradient, but see below)
  torch::Tensor kept;   // T x k bool: false where capacity dropped the assignment
  /// combine[t, e] = gate of expert e for token t where assigned and kept, else 0 (T x E).
  torch::Tensor combine;
  /// Per expert: the kept assignments (E, int64, on the logits' device).
  torch::Tensor expert_counts;
  /// Per expert: the tokens routed to it (ascending) and which of their k slots it fills
  /// (RouteOptions::expert_lists).
  std::vector<torch::Tensor> expert_tokens;
  std::vector<torch::Tensor> expert_slots;
  int64_t dropped = 0;  // assignments dropped by capacity
  /// Set where the stacked layer routes with FusedCosineGate (training only): softmax of the
  /// clean logits and the load terms of ImportanceLoadLoss, which carry the router's gradient to
  /// the auxiliary losses. There `clean_logits`, `probs`, `top_probs`, `gates` and `combine`
  /// carry none: the gated rank columns and these two do.
  torch::Tensor clean_probs, load_terms;
};

/// The router noise of `tokens` rows (T x E, standard normal, float32 on the CPU) for this step
/// and layer, drawn for the whole global batch and cut to this rank's rows, so that it does not
/// depend on how the batch is split. Route adds it divided by E to the clean logits in training.
torch::Tensor RouterNoise(const RoutingContext& context, int64_t layer, int64_t tokens,
                          int64_t experts, int64_t tokens_per_sample);

/// Routes tokens given their clean logits. `layer` keys the noise; `tokens_per_sample` maps token
/// rows to samples for RoutingContext::global_rows.
Routing Route(const torch::Tensor& clean_logits, const RouteOptions& options,
              const RoutingContext& context, int64_t layer, int64_t tokens_per_sample,
              bool training);

/// The reference's load-balancing loss (docs/method.md, Load-balancing loss): weight *
/// (cv^2(importance) + cv^2(load)) / 2, importance_e = sum_t softmax(clean)_te, load_e = sum_t
/// Phi((softmax(clean)_te - threshold_t) / sigma), threshold_t the k-th largest noisy probability
/// of token t, sigma = 1 / E, cv^2 = unbiased variance / (mean^2 + 1e-10). Importance and load are
/// summed over `group` (when given) before the cv^2, so the loss is the global batch's at any
/// number of data-parallel ranks.
torch::Tensor ImportanceLoadLoss(const Routing& routing, int64_t top_k, double weight,
                                 parallel::Communicator* group = nullptr);

/// Switch Transformer's loss: weight * E * sum_e f_e P_e, f_e the fraction of tokens whose first
/// choice is e, P_e the mean clean probability of e.
torch::Tensor SwitchLoss(const Routing& routing, double weight,
                         parallel::Communicator* group = nullptr);

}  // namespace moa
