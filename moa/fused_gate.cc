#include "moa/fused_gate.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace moa {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// F::normalize's eps, as in RouterImpl::LogitsFromProjection: p / max(|p|, eps).
constexpr double kNormEps = 1e-12;
constexpr int64_t kTokensPerTask = 256;

// Softmax of `in` (n values) into `out`, subtracting the maximum first.
template <typename scalar_t>
void Softmax(const scalar_t* in, scalar_t* out, int64_t n) {
  scalar_t top = in[0];
  for (int64_t j = 1; j < n; ++j) top = std::max(top, in[j]);
  scalar_t sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    out[j] = std::exp(in[j] - top);
    sum += out[j];
  }
  for (int64_t j = 0; j < n; ++j) out[j] /= sum;
}

struct CosineGateFunction : torch::autograd::Function<CosineGateFunction> {
  // Outputs: gated, clean_probs, load_terms (size 0 without aux), then the non-differentiable
  // clean_logits, probs, experts, gates, combine.
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& both_in,
                               const torch::Tensor& keys_in, int64_t proj_dim,
                               const torch::Tensor& noise_in, const torch::Tensor& column_expert_in,
                               bool aux) {
    const torch::Tensor both = both_in.contiguous();
    const torch::Tensor keys = keys_in.contiguous();
    const torch::Tensor column_expert = column_expert_in.to(torch::kInt64).contiguous();
    const int64_t tokens = both.size(0), width = both.size(1), experts = keys.size(1);
    const int64_t columns = width - proj_dim;
    TORCH_CHECK(keys.size(0) == proj_dim && column_expert.numel() == columns,
                "fused gate: shapes of the projection, keys and rank columns disagree");
    const torch::Tensor projection = both.narrow(1, 0, proj_dim);
    // |p_t| * clean logit_te (as a Linear with weight keys^T: MKL's thin products are several times
    // faster in that layout than as projection x keys), and |p_t|.
    const torch::Tensor raw = at::linear(projection, keys.t().contiguous());
    const torch::Tensor norms = at::linalg_vector_norm(projection, 2, {1}).contiguous();
    // An empty `noise` stands for none (autograd's inputs must be defined tensors).
    const torch::Tensor noise =
        noise_in.numel() > 0 ? noise_in.to(both.options()).contiguous() : torch::Tensor();
    TORCH_CHECK(!noise.defined() || noise.sizes() == raw.sizes(),
                "fused gate: the noise must be tokens x experts");
    const auto options = both.options();
    torch::Tensor gated = torch::empty({tokens, columns}, options);
    torch::Tensor clean_probs = torch::empty({aux ? tokens : 0, experts}, options);
    torch::Tensor load_terms = torch::empty({aux ? tokens : 0, experts}, options);
    torch::Tensor clean_logits = torch::empty({tokens, experts}, options);
    torch::Tensor probs = torch::empty({tokens, experts}, options);
    torch::Tensor chosen = torch::empty({tokens, 1}, options.dtype(torch::kInt64));
    torch::Tensor gates = torch::empty({tokens, 1}, options);
    torch::Tensor combine = torch::empty({tokens, experts}, options);
    const int64_t* column_of = column_expert.data_ptr<int64_t>();
    for (int64_t c = 0; c < columns; ++c) {
      TORCH_CHECK(column_of[c] >= 0 && column_of[c] < experts, "fused gate: rank column ", c,
                  " names expert ", column_of[c], " of ", experts);
    }
    AT_DISPATCH_FLOATING_TYPES(both.scalar_type(), "CosineGateForward", [&] {
      const scalar_t* rows = both.data_ptr<scalar_t>();
      const scalar_t* raw_ptr = raw.data_ptr<scalar_t>();
      const scalar_t* norm_ptr = norms.data_ptr<scalar_t>();
      const scalar_t* noise_ptr = noise.defined() ? noise.data_ptr<scalar_t>() : nullptr;
      scalar_t* gated_ptr = gated.data_ptr<scalar_t>();
      scalar_t* clean_ptr = clean_probs.data_ptr<scalar_t>();
      scalar_t* load_ptr = load_terms.data_ptr<scalar_t>();
      scalar_t* logit_ptr = clean_logits.data_ptr<scalar_t>();
      scalar_t* prob_ptr = probs.data_ptr<scalar_t>();
      int64_t* chosen_ptr = chosen.data_ptr<int64_t>();
      scalar_t* gate_ptr = gates.data_ptr<scalar_t>();
      scalar_t* combine_ptr = combine.data_ptr<scalar_t>();
      const scalar_t sigma = static_cast<scalar_t>(1.0 / static_cast<double>(experts));
      at::parallel_for(0, tokens, kTokensPerTask, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> noisy(experts);
        for (int64_t t = begin; t < end; ++t) {
          const scalar_t length = std::max(norm_ptr[t], static_cast<scalar_t>(kNormEps));
          scalar_t* logit = logit_ptr + t * experts;
          for (int64_t e = 0; e < experts; ++e) {
            logit[e] = raw_ptr[t * experts + e] / length;
            noisy[e] = noise_ptr != nullptr ? logit[e] + noise_ptr[t * experts + e] : logit[e];
          }
          scalar_t* prob = prob_ptr + t * experts;
          Softmax(noisy.data(), prob, experts);
          const int64_t best = std::max_element(prob, prob + experts) - prob;
          const scalar_t gate = prob[best];
          chosen_ptr[t] = best;
          gate_ptr[t] = gate;
          for (int64_t e = 0; e < experts; ++e) combine_ptr[t * experts + e] = e == best ? gate : 0;
          const scalar_t* low = rows + t * width + proj_dim;
          scalar_t* out = gated_ptr + t * columns;
          for (int64_t c = 0; c < columns; ++c) out[c] = column_of[c] == best ? low[c] * gate : 0;
          if (!aux) continue;
          scalar_t* clean = clean_ptr + t * experts;
          Softmax(logit, clean, experts);
          for (int64_t e = 0; e < experts; ++e) {
            load_ptr[t * experts + e] =
                0.5 * (1.0 + std::erf((clean[e] - gate) / sigma / std::sqrt(scalar_t(2))));
          }
        }
      });
    });
    ctx->mark_non_differentiable({clean_logits, probs, chosen, gates, combine});
    // Every tensor through save_for_backward, outputs included: autograd then keeps no reference
    // cycle from an output to this node (saved_data would) and checks that nothing modified them
    // in place before the backward.
    ctx->save_for_backward(
        {both, keys, norms, clean_logits, probs, clean_probs, chosen, gates, column_expert});
    ctx->saved_data["proj_dim"] = proj_dim;
    // Unused outputs (the non-differentiable ones, an unused auxiliary term) reach the backward
    // as undefined gradients rather than as tensors of zeros.
    ctx->set_materialize_grads(false);
    return {gated, clean_probs, load_terms, clean_logits, probs, chosen, gates, combine};
  }

  // With l the clean logits, q the noisy probabilities, c the clean ones, g = q[best]:
  //   d low[c]  = d gated[c] * g on the chosen expert's columns, else 0;
  //   dg        = sum over those columns of d gated * low - sum_e d load_e * phi(z_e) / sigma;
  //   dc_e      = d clean_e + d load_e * phi(z_e) / sigma;
  //   dl_j      = c_j (dc_j - sum_i c_i dc_i) + dg q_j ([j = best] - g);
  //   d keys    = P^T (dl / max(|p|, eps));
  //   d p       = (dl / max(|p|, eps)) keys^T - p (dl . l) / (max(|p|, eps) |p|)  (|p| >= eps).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& both = saved[0];
    const torch::Tensor& keys = saved[1];
    const torch::Tensor& norms = saved[2];
    const torch::Tensor& clean_logits = saved[3];
    const torch::Tensor& probs = saved[4];
    const torch::Tensor& clean_probs = saved[5];
    const torch::Tensor& chosen = saved[6];
    const torch::Tensor& gates = saved[7];
    const torch::Tensor& column_expert = saved[8];
    const int64_t proj_dim = ctx->saved_data["proj_dim"].toInt();
    const int64_t tokens = both.size(0), width = both.size(1), experts = keys.size(1);
    const int64_t columns = width - proj_dim;
    const bool aux = clean_probs.size(0) == tokens && tokens > 0;
    const torch::Tensor d_gated = grads[0].defined() ? grads[0].contiguous() : torch::Tensor();
    const torch::Tensor d_clean =
        aux && grads[1].defined() ? grads[1].contiguous() : torch::Tensor();
    const torch::Tensor d_load =
        aux && grads[2].defined() ? grads[2].contiguous() : torch::Tensor();

    torch::Tensor d_both = torch::empty({tokens, width}, both.options());
    // dl / max(|p|, eps), and the coefficient of p in d p.
    torch::Tensor d_scaled = torch::empty({tokens, experts}, both.options());
    AT_DISPATCH_FLOATING_TYPES(both.scalar_type(), "CosineGateBackward", [&] {
      const scalar_t* rows = both.data_ptr<scalar_t>();
      const scalar_t* norm_ptr = norms.data_ptr<scalar_t>();
      const scalar_t* logit_ptr = clean_logits.data_ptr<scalar_t>();
      const scalar_t* prob_ptr = probs.data_ptr<scalar_t>();
      const scalar_t* clean_ptr = aux ? clean_probs.data_ptr<scalar_t>() : nullptr;
      const int64_t* chosen_ptr = chosen.data_ptr<int64_t>();
      const scalar_t* gate_ptr = gates.data_ptr<scalar_t>();
      const int64_t* column_of = column_expert.data_ptr<int64_t>();
      const scalar_t* d_gated_ptr = d_gated.defined() ? d_gated.data_ptr<scalar_t>() : nullptr;
      const scalar_t* d_clean_ptr = d_clean.defined() ? d_clean.data_ptr<scalar_t>() : nullptr;
      const scalar_t* d_load_ptr = d_load.defined() ? d_load.data_ptr<scalar_t>() : nullptr;
      scalar_t* d_both_ptr = d_both.data_ptr<scalar_t>();
      scalar_t* d_scaled_ptr = d_scaled.data_ptr<scalar_t>();
      const scalar_t sigma = static_cast<scalar_t>(1.0 / static_cast<double>(experts));
      const scalar_t inv_sqrt_2pi = static_cast<scalar_t>(0.3989422804014327);
      at::parallel_for(0, tokens, kTokensPerTask, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> d_clean_row(experts), d_logit(experts);
        for (int64_t t = begin; t < end; ++t) {
          const int64_t best = chosen_ptr[t];
          const scalar_t gate = gate_ptr[t];
          const scalar_t* low = rows + t * width + proj_dim;
          scalar_t* d_low = d_both_ptr + t * width + proj_dim;
          scalar_t d_gate = 0;
          if (d_gated_ptr != nullptr) {
            const scalar_t* d_out = d_gated_ptr + t * columns;
            for (int64_t c = 0; c < columns; ++c) {
              const bool mine = column_of[c] == best;
              d_low[c] = mine ? d_out[c] * gate : 0;
              if (mine) d_gate += d_out[c] * low[c];
            }
          } else {
            std::fill(d_low, d_low + columns, scalar_t(0));
          }
          std::fill(d_logit.begin(), d_logit.end(), scalar_t(0));
          if (d_clean_ptr != nullptr || d_load_ptr != nullptr) {
            const scalar_t* clean = clean_ptr + t * experts;
            for (int64_t e = 0; e < experts; ++e) {
              d_clean_row[e] = d_clean_ptr != nullptr ? d_clean_ptr[t * experts + e] : 0;
              if (d_load_ptr == nullptr) continue;
              const scalar_t z = (clean[e] - gate) / sigma;
              const scalar_t through =
                  d_load_ptr[t * experts + e] * inv_sqrt_2pi * std::exp(-z * z / 2) / sigma;
              d_clean_row[e] += through;
              d_gate -= through;
            }
            scalar_t dot = 0;
            for (int64_t e = 0; e < experts; ++e) dot += clean[e] * d_clean_row[e];
            for (int64_t e = 0; e < experts; ++e) d_logit[e] = clean[e] * (d_clean_row[e] - dot);
          }
          const scalar_t* prob = prob_ptr + t * experts;
          for (int64_t e = 0; e < experts; ++e) {
            d_logit[e] += d_gate * prob[e] * ((e == best ? scalar_t(1) : scalar_t(0)) - gate);
          }
          const scalar_t norm = norm_ptr[t];
          const scalar_t length = std::max(norm, static_cast<scalar_t>(kNormEps));
          scalar_t along = 0;
          for (int64_t e = 0; e < experts; ++e) {
            d_scaled_ptr[t * experts + e] = d_logit[e] / length;
            along += d_logit[e] * logit_ptr[t * experts + e];
          }
          const scalar_t coefficient =
              norm >= static_cast<scalar_t>(kNormEps) ? along / (length * norm) : scalar_t(0);
          const scalar_t* p = rows + t * width;
          scalar_t* d_p = d_both_ptr + t * width;
          for (int64_t k = 0; k < proj_dim; ++k) d_p[k] = -coefficient * p[k];
        }
      });
    });
    const torch::Tensor projection = both.narrow(1, 0, proj_dim);
    d_both.narrow(1, 0, proj_dim).addmm_(d_scaled, keys.t());
    // (d_scaled^T P)^T rather than P^T d_scaled: the same product, in MKL's faster layout.
    const torch::Tensor d_keys =
        ctx->needs_input_grad(1) ? d_scaled.t().mm(projection).t() : torch::Tensor();
    return {d_both, d_keys, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

bool FusedGateSupports(const torch::Tensor& both) {
  return both.device().is_cpu() &&
         (both.scalar_type() == torch::kFloat32 || both.scalar_type() == torch::kFloat64);
}

FusedGate FusedCosineGate(const torch::Tensor& both, int64_t proj_dim, const torch::Tensor& keys,
                          const torch::Tensor& noise, const torch::Tensor& column_expert,
                          bool aux) {
  TORCH_CHECK(FusedGateSupports(both), "fused gate: float or double CPU tensors only");
  const torch::Tensor no_noise = torch::empty({0}, both.options());
  const variable_list out = CosineGateFunction::apply(
      both, keys, proj_dim, noise.defined() ? noise : no_noise, column_expert, aux);
  FusedGate gate;
  gate.gated = out[0];
  if (aux) {
    gate.clean_probs = out[1];
    gate.load_terms = out[2];
  }
  gate.clean_logits = out[3];
  gate.probs = out[4];
  gate.experts = out[5];
  gate.gates = out[6];
  gate.combine = out[7];
  return gate;
}

}  // namespace moa
