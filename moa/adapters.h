// Adapters that add a trainable update beside a frozen Linear (docs/method.md), and the Linear slot
// that holds one: AdaptableLinear keeps timm's parameter names (`weight`, `bias`) so pretrained
// backbones load unchanged, and an adapter registered under it adds `lora.A`, ...
//
//   AdaptableLinear qkv(AdaptableLinearOptions(768, 2304));
//   qkv->set_adapter(std::make_shared<LoraImpl>(LoraOptions(768, 2304, /*rank=*/2)));
//   y = qkv->forward(x);  // W0 x + b0 + B(A x)
#pragma once

#include <memory>
#include <string>

#include <torch/torch.h>

namespace moa {

/// An additive update to a Linear's output: y = W0 x + b0 + Delta(x).
class AdapterImpl : public torch::nn::Module {
 public:
  /// The update for inputs x (..., in_features); returns (..., out_features).
  virtual torch::Tensor Delta(const torch::Tensor& x) = 0;
  /// The name this adapter is registered under in its Linear ("lora", ...).
  virtual std::string kind() const = 0;
};

struct LoraOptions {
  LoraOptions(int64_t in_features, int64_t out_features, int64_t rank)
      : in_features_(in_features), out_features_(out_features), rank_(rank) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(int64_t, rank);
  /// Output scale; the reference uses 1, PEFT uses alpha / rank.
  TORCH_ARG(double, scale) = 1.0;
};

/// LoRA as the MoA reference builds it (docs/method.md, LoRA): A (rank x in) ~ N(0, 1/rank) -- a
/// standard deviation of 1/rank, not Kaiming --, B (out x rank) = 0, so the model starts at the
/// pretrained function; Delta(x) = scale * B A x.
class LoraImpl : public AdapterImpl {
 public:
  explicit LoraImpl(const LoraOptions& options);
  torch::Tensor Delta(const torch::Tensor& x) override;
  std::string kind() const override { return "lora"; }
  const LoraOptions& options() const { return options_; }

  torch::Tensor A;
  torch::Tensor B;

 private:
  LoraOptions options_;
};

struct AdaptableLinearOptions {
  AdaptableLinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
};

/// A Linear layer (timm names `weight`, `bias`, initialised like timm's ViT: trunc-normal std
/// 0.02, zero bias) that may carry one adapter.
class AdaptableLinearImpl : public torch::nn::Module {
 public:
  explicit AdaptableLinearImpl(const AdaptableLinearOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  /// Installs `adapter` (replacing any previous one) under the adapter's kind() name.
  void set_adapter(std::shared_ptr<AdapterImpl> adapter);
  /// Removes the adapter (after its update was merged into `weight`).
  void clear_adapter();
  const std::shared_ptr<AdapterImpl>& adapter() const { return adapter_; }
  const AdaptableLinearOptions& options() const { return options_; }

  torch::Tensor weight;
  torch::Tensor bias;

 private:
  AdaptableLinearOptions options_;
  std::shared_ptr<AdapterImpl> adapter_;
};
TORCH_MODULE(AdaptableLinear);

}  // namespace moa
