#include "moa/models.h"

#include "moa/init.h"

namespace moa {
namespace F = torch::nn::functional;

LinearShape BlockLinearShape(const std::string& name, int64_t dim, double mlp_ratio) {
  const int64_t hidden = static_cast<int64_t>(dim * mlp_ratio);
  if (name == "qkv") return {dim, 3 * dim};
  if (name == "proj") return {dim, dim};
  if (name == "fc1") return {dim, hidden};
  TORCH_CHECK(name == "fc2", "no Linear ", name, " in a ViT block (qkv, proj, fc1, fc2)");
  return {hidden, dim};
}

namespace {

AdaptableLinear BlockLinear(const std::string& name, int64_t dim, double mlp_ratio) {
  const LinearShape shape = BlockLinearShape(name, dim, mlp_ratio);
  return AdaptableLinear(AdaptableLinearOptions(shape.in, shape.out));
}

}  // namespace

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads) : heads_(heads) {
  TORCH_CHECK(dim % heads == 0, "ViT width ", dim, " does not divide into ", heads, " heads");
  qkv = register_module("qkv", BlockLinear("qkv", dim, 0));
  proj = register_module("proj", BlockLinear("proj", dim, 0));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), n = x.size(1), c = x.size(2);
  // (B, N, 3, H, hd) -> (3, B, H, N, hd), as timm.
  torch::Tensor qkv_out =
      qkv->forward(x).reshape({b, n, 3, heads_, c / heads_}).permute({2, 0, 3, 1, 4});
  // softmax(q k^T / sqrt(hd)) v, through ATen's fused kernels (flash or memory-efficient on GPU,
  // a blocked kernel on CPU), as timm's fused_attn path.
  // unbind, not three selects: its backward stacks the three gradients, where each select's
  // backward zero-fills a tensor of the whole qkv size and copies its slice in.
  const std::vector<torch::Tensor> q_k_v = qkv_out.unbind(0);
  torch::Tensor out = at::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);
  return proj->forward(out.transpose(1, 2).reshape({b, n, c}));
}

MlpImpl::MlpImpl(int64_t dim, double mlp_ratio) {
  fc1 = register_module("fc1", BlockLinear("fc1", dim, mlp_ratio));
  fc2 = register_module("fc2", BlockLinear("fc2", dim, mlp_ratio));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return fc2->forward(F::gelu(fc1->forward(x)));
}

BlockImpl::BlockImpl(int64_t dim, int64_t heads, double mlp_ratio, double norm_eps) {
  norm1 = register_module("norm1",
                          torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(norm_eps)));
  attn = register_module("attn", Attention(dim, heads));
  norm2 = register_module("norm2",
                          torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(norm_eps)));
  mlp = register_module("mlp", Mlp(dim, mlp_ratio));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x + attn->forward(norm1->forward(x));
  return h + mlp->forward(norm2->forward(h));
}

VisionTransformerImpl::VisionTransformerImpl(const ViTOptions& options) : options_(options) {
  TORCH_CHECK(options.img_size() % options.patch_size() == 0, "model.img_size ", options.img_size(),
              " is not a multiple of model.patch_size ", options.patch_size());
  const int64_t dim = options.dim();
  const int64_t grid = options.img_size() / options.patch_size();
  // timm registers patch_embed.proj; a nested module keeps that name.
  auto patch_embed = register_module("patch_embed", std::make_shared<torch::nn::Module>());
  patch_proj_ = patch_embed->register_module(
      "proj",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_chans(), dim, options.patch_size())
                            .stride(options.patch_size())
                            .bias(!options.norm_pre())));
  cls_token_ = register_parameter("cls_token", torch::zeros({1, 1, dim}));
  pos_embed_ = register_parameter("pos_embed", torch::zeros({1, grid * grid + 1, dim}));
  {
    torch::NoGradGuard no_grad;
    cls_token_.normal_(0.0, 1e-6);
  }
  TruncNormal_(pos_embed_, 0.0, 0.02, -2.0, 2.0);
  if (options.norm_pre()) {
    norm_pre_ = register_module(
        "norm_pre",
        torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(options.norm_eps())));
  }
  auto blocks = register_module("blocks", std::make_shared<torch::nn::Module>());
  for (int64_t i = 0; i < options.depth(); ++i) {
    blocks_.push_back(blocks->register_module(
        std::to_string(i), Block(dim, options.heads(), options.mlp_ratio(), options.norm_eps())));
  }
  norm_ = register_module(
      "norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(options.norm_eps())));
  head_ = register_module("head", torch::nn::Linear(dim, options.num_classes()));
  {
    torch::NoGradGuard no_grad;
    TruncNormal_(head_->weight, 0.0, 0.02, -2.0, 2.0);
    head_->bias.zero_();
  }
}

torch::Tensor VisionTransformerImpl::Tokens(const torch::Tensor& images) {
  torch::Tensor x = patch_proj_->forward(images).flatten(2).transpose(1, 2);
  x = torch::cat({cls_token_.expand({x.size(0), -1, -1}), x}, 1) + pos_embed_;
  return norm_pre_ ? norm_pre_->forward(x) : x;
}

torch::Tensor VisionTransformerImpl::RunBlocks(torch::Tensor x, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) x = blocks_[i]->forward(x);
  return x;
}

torch::Tensor VisionTransformerImpl::Logits(const torch::Tensor& x) {
  return head_->forward(norm_->forward(x).select(1, 0));
}

int64_t VisionTransformerImpl::FirstAdaptedBlock() const {
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    for (const AdaptableLinear& l : {b->attn->qkv, b->attn->proj, b->mlp->fc1, b->mlp->fc2}) {
      if (l->adapter()) return static_cast<int64_t>(i);
    }
  }
  return static_cast<int64_t>(blocks_.size());
}

torch::Tensor VisionTransformerImpl::Features(const torch::Tensor& images) {
  torch::Tensor x = RunBlocks(Tokens(images), 0, static_cast<int64_t>(blocks_.size()));
  return norm_->forward(x).select(1, 0);
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& images) {
  return head_->forward(Features(images));
}

MnistCnnImpl::MnistCnnImpl(int64_t in_chans, int64_t num_classes) {
  using torch::nn::Conv2dOptions;
  conv1_ = register_module("conv1", torch::nn::Conv2d(Conv2dOptions(in_chans, 64, 3).padding(1)));
  conv2_ =
      register_module("conv2", torch::nn::Conv2d(Conv2dOptions(64, 128, 3).stride(2).padding(1)));
  conv3_ = register_module("conv3", torch::nn::Conv2d(Conv2dOptions(128, 128, 3).padding(1)));
  conv4_ = register_module("conv4", torch::nn::Conv2d(Conv2dOptions(128, 128, 3).padding(1)));
  bn0_ = register_module("bn0", torch::nn::GroupNorm(8, 64));
  bn1_ = register_module("bn1", torch::nn::GroupNorm(8, 128));
  bn2_ = register_module("bn2", torch::nn::GroupNorm(8, 128));
  bn3_ = register_module("bn3", torch::nn::GroupNorm(8, 128));
  head_ = register_module("head", torch::nn::Linear(128, num_classes));
}

torch::Tensor MnistCnnImpl::Features(const torch::Tensor& images) {
  torch::Tensor x = bn0_->forward(torch::relu(conv1_->forward(images)));
  x = bn1_->forward(torch::relu(conv2_->forward(x)));
  x = bn2_->forward(torch::relu(conv3_->forward(x)));
  x = bn3_->forward(torch::relu(conv4_->forward(x)));
  return x.mean({2, 3});
}

torch::Tensor MnistCnnImpl::forward(const torch::Tensor& images) {
  return head_->forward(Features(images));
}

}  // namespace moa
