// The stacked MoA layer's top-1 cosine routing and gating as one autograd function with a
// hand-written backward: from the shared GEMM's output [router projection | experts'
// down-projections] to the gated rank columns, plus the clean probabilities and load terms of the
// auxiliary loss. Per layer and step it replaces some thirty small ATen operations and their
// backward nodes (normalise, two softmaxes, top-1, scatters, the gate mask) with two thin GEMMs
// and one pass over the tokens each way (docs/architecture.md, One training step).
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace moa {

/// What FusedCosineGate computes for T tokens, E experts and C rank columns.
struct FusedGate {
  /// T x C: low[t, c] * gate_t where column c belongs to token t's expert, else 0.
  torch::Tensor gated;
  /// T x E: softmax of the clean logits, and Phi((clean_probs - gate) / sigma) with sigma = 1 / E
  /// (the reference's load terms for top-1): with `aux` only, differentiable.
  torch::Tensor clean_probs, load_terms;
  torch::Tensor clean_logits;  // T x E
  torch::Tensor probs;         // T x E: softmax of the (noisy) logits
  /// T x 1 int64: the chosen expert; of equal best probabilities the first (Route's topk leaves
  /// the order of ties unspecified).
  torch::Tensor experts;
  torch::Tensor gates;    // T x 1: its probability (no gradient: `gated` carries it)
  torch::Tensor combine;  // T x E: the gate at the chosen expert, else 0
};

/// Whether FusedCosineGate runs on tensors like `both`: float or double on the CPU.
bool FusedGateSupports(const torch::Tensor& both);

/// Top-1 cosine routing of T tokens and the gate applied to their rank columns. `both` is
/// T x (proj_dim + C): the router's projection (before normalisation) in its first proj_dim
/// columns, the experts' down-projections in the rest. `keys` (proj_dim x E) are the router's
/// keys times its scale, so that clean logit_te = <p_t / |p_t|, keys_e> (RouterImpl::ScaledKeys).
/// `noise` (T x E, or undefined) is added to the clean logits before the softmax that chooses.
/// `column_expert` (C, int64) names each rank column's expert. Gradients flow to `both` and
/// `keys`; equal, to rounding, to the same formula in ATen operations (RouterImpl::Logits, Route
/// with top_k = 1 and no capacity, ImportanceLoadLoss's terms).
FusedGate FusedCosineGate(const torch::Tensor& both, int64_t proj_dim, const torch::Tensor& keys,
                          const torch::Tensor& noise, const torch::Tensor& column_expert, bool aux);

}  // namespace moa
