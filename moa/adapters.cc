#include "moa/adapters.h"

#include "moa/init.h"

namespace moa {

LoraImpl::LoraImpl(const LoraOptions& options) : options_(options) {
  TORCH_CHECK(options.rank() > 0, "LoRA rank must be positive");
  A = register_parameter("A", torch::randn({options.rank(), options.in_features()}) /
                                  static_cast<double>(options.rank()));
  B = register_parameter("B", torch::zeros({options.out_features(), options.rank()}));
}

torch::Tensor LoraImpl::Delta(const torch::Tensor& x) {
  torch::Tensor update = torch::linear(torch::linear(x, A), B);
  return options_.scale() == 1.0 ? update : update * options_.scale();
}

AdaptableLinearImpl::AdaptableLinearImpl(const AdaptableLinearOptions& options)
    : options_(options) {
  weight =
      register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  TruncNormal_(weight, 0.0, 0.02, -2.0, 2.0);
  if (options.bias()) bias = register_parameter("bias", torch::zeros({options.out_features()}));
}

torch::Tensor AdaptableLinearImpl::forward(const torch::Tensor& x) {
  // ATen's linear, as PyTorch's nn.Linear: one matrix product with the bias added in its epilogue,
  // in bfloat16 under autocast. The C++ frontend's functional linear multiplies a (B, N, C) input
  // and then adds the bias in place, in float, through a broadcasting kernel: on an H100 that
  // add cost a sixth of a bf16 ViT-B/16 training step. (A non-contiguous 3-D input takes that
  // path in ATen too; the blocks' inputs are contiguous.)
  torch::Tensor y = torch::linear(x, weight, bias);
  if (adapter_) y = y + adapter_->Delta(x);
  return y;
}

void AdaptableLinearImpl::clear_adapter() {
  if (!adapter_) return;
  unregister_module(adapter_->kind());
  adapter_.reset();
}

void AdaptableLinearImpl::set_adapter(std::shared_ptr<AdapterImpl> adapter) {
  const std::string name = adapter->kind();
  if (adapter_) {
    adapter_ = replace_module(adapter_->kind(), std::move(adapter));
  } else {
    adapter_ = register_module(name, std::move(adapter));
  }
}

}  // namespace moa
