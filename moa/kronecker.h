// Kronecker (KAdaptation) adapters, as the MoA reference builds them (docs/method.md, Kronecker
// adapter): the update matrix H = sum_s A_s (x) (L_s R_s), with A_s = a_s b_s^T rank-1 "rule"
// matrices shared by every layer and expert of a model, and per-adapter low-rank factors
// L (n x p x r), R (n x r x q) where in = n p and out = n q. In training, dropout may be applied
// to H itself.
//
//   auto rules = std::make_shared<KroneckerRulesImpl>(64);    // once per model
//   KroneckerImpl k(KroneckerOptions(768, 2304, /*rank=*/4), rules);
//   y = W0 x + b0 + x H + bias
#pragma once

#include <memory>
#include <optional>

#include <torch/torch.h>

#include "moa/adapters.h"

namespace moa {

/// The shared rule tensors: rule1_left (n x n x 1) and rule1_right (n x 1 x n), U(-0.01, 0.01).
/// With `with_unused_rule0` the reference's never-used rule0 pair is registered too (trainable,
/// never given a gradient), which its parameter counts include (docs/method.md, Quirks Q5).
class KroneckerRulesImpl : public torch::nn::Module {
 public:
  KroneckerRulesImpl(int64_t phm_dim, bool with_unused_rule0);
  /// The n rank-1 matrices A_s = a_s b_s^T, (n x n x n) indexed [s, i, j].
  torch::Tensor RuleMatrices() const;
  int64_t phm_dim() const { return phm_dim_; }

  torch::Tensor rule1_left;
  torch::Tensor rule1_right;

 private:
  int64_t phm_dim_;
};

struct KroneckerOptions {
  KroneckerOptions(int64_t in_features, int64_t out_features, int64_t rank)
      : in_features_(in_features), out_features_(out_features), rank_(rank) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(int64_t, rank);
  /// A trainable bias (zero-initialised) added to the output.
  TORCH_ARG(bool, bias) = true;
  /// Dropout probability on H in training (the reference's experts use 0.5).
  TORCH_ARG(double, dropout) = 0.0;
};

class KroneckerImpl : public AdapterImpl {
 public:
  KroneckerImpl(const KroneckerOptions& options, std::shared_ptr<KroneckerRulesImpl> rules);
  /// H (in x out); in training with dropout > 0 the mask comes from a generator on H's device
  /// keyed by `dropout_key` (kept entries are scaled by 1 / (1 - p)).
  torch::Tensor UpdateMatrix(bool training, uint64_t dropout_key) const;
  /// x H as this forward computes it: in training with dropout (whose mask acts on H's entries)
  /// H is built, masked and applied; otherwise through Product, without building H.
  torch::Tensor Apply(const torch::Tensor& x, bool training, uint64_t dropout_key) const;
  /// x H (any leading dimensions) computed through H's structure, never building it: n (n p +
  /// r (p + q) + n q) multiply-adds per row instead of n p n q, with the same gradients.
  torch::Tensor Product(const torch::Tensor& x) const;
  /// x H (+ bias), without dropout: the plain KAdaptation adapter.
  torch::Tensor Delta(const torch::Tensor& x) override;
  std::string kind() const override { return "kadaptation"; }
  const KroneckerOptions& options() const { return options_; }

  torch::Tensor L;
  torch::Tensor R;
  torch::Tensor bias;

 private:
  torch::Tensor BuildUpdateMatrix() const;

  KroneckerOptions options_;
  std::shared_ptr<KroneckerRulesImpl> rules_;
};

}  // namespace moa
