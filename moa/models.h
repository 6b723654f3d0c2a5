// The classifiers moa trains: a Vision Transformer with timm's structure and parameter names
// (patch_embed.proj, cls_token, pos_embed, norm_pre, blocks.{i}.norm1/attn.qkv/attn.proj/norm2/
// mlp.fc1/mlp.fc2, norm, head) of any size, and DomainBed's MNIST_CNN (featurizer + head). Both
// return logits; `head` is the classifier, everything else is the backbone.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "moa/adapters.h"

namespace moa {

/// A model whose forward returns class logits and whose classifier is the Linear `head`.
class ClassifierImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& images) = 0;
  /// Features before the head (B x feature_dim).
  virtual torch::Tensor Features(const torch::Tensor& images) = 0;
  virtual torch::nn::Linear head() = 0;
};

struct ViTOptions {
  TORCH_ARG(int64_t, img_size) = 224;
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, in_chans) = 3;
  TORCH_ARG(int64_t, dim) = 768;
  TORCH_ARG(int64_t, depth) = 12;
  TORCH_ARG(int64_t, heads) = 12;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  /// timm's pre_norm: a LayerNorm after the position embedding (CLIP); as in timm, it also drops
  /// the patch-embedding bias.
  TORCH_ARG(bool, norm_pre) = false;
  TORCH_ARG(double, norm_eps) = 1e-6;
  TORCH_ARG(int64_t, num_classes) = 1000;
};

/// In and out features of a block's Linear (qkv, proj, fc1 or fc2) in a ViT of width `dim`.
struct LinearShape {
  int64_t in = 0;
  int64_t out = 0;
};
LinearShape BlockLinearShape(const std::string& name, int64_t dim, double mlp_ratio);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x);
  AdaptableLinear qkv{nullptr};
  AdaptableLinear proj{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, double mlp_ratio);
  torch::Tensor forward(const torch::Tensor& x);
  AdaptableLinear fc1{nullptr};
  AdaptableLinear fc2{nullptr};
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t dim, int64_t heads, double mlp_ratio, double norm_eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm1{nullptr};
  Attention attn{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

class VisionTransformerImpl : public ClassifierImpl {
 public:
  explicit VisionTransformerImpl(const ViTOptions& options);
  torch::Tensor forward(const torch::Tensor& images) override;
  torch::Tensor Features(const torch::Tensor& images) override;
  torch::nn::Linear head() override { return head_; }
  const ViTOptions& options() const { return options_; }

  /// The forward in pieces, so models that share a frozen prefix can compute it once:
  /// Tokens(images) -> RunBlocks(x, 0, k) -> RunBlocks(x, k, depth) -> Logits(x) == forward.
  torch::Tensor Tokens(const torch::Tensor& images);
  torch::Tensor RunBlocks(torch::Tensor x, int64_t begin, int64_t end);
  torch::Tensor Logits(const torch::Tensor& x);
  /// The first block holding an adapter (depth when none).
  int64_t FirstAdaptedBlock() const;
  std::vector<Block>& blocks() { return blocks_; }

 private:
  ViTOptions options_;
  torch::nn::Conv2d patch_proj_{nullptr};
  torch::Tensor cls_token_;
  torch::Tensor pos_embed_;
  torch::nn::LayerNorm norm_pre_{nullptr};
  std::vector<Block> blocks_;
  torch::nn::LayerNorm norm_{nullptr};
  torch::nn::Linear head_{nullptr};
};

/// DomainBed's MNIST_CNN: four 3x3 convolutions (64, 128 stride 2, 128, 128) each followed by
/// ReLU and GroupNorm(8), global average pooling to 128 features, then the Linear head.
class MnistCnnImpl : public ClassifierImpl {
 public:
  MnistCnnImpl(int64_t in_chans, int64_t num_classes);
  torch::Tensor forward(const torch::Tensor& images) override;
  torch::Tensor Features(const torch::Tensor& images) override;
  torch::nn::Linear head() override { return head_; }

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr}, conv4_{nullptr};
  torch::nn::GroupNorm bn0_{nullptr}, bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  torch::nn::Linear head_{nullptr};
};

}  // namespace moa
