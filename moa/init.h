// Weight initialisers that LibTorch's C++ frontend lacks (timm's trunc_normal_).
#pragma once

#include <torch/torch.h>

namespace moa {

/// Fills `tensor` in place from N(mean, std) truncated to [a, b] (inverse-CDF method, as timm).
void TruncNormal_(torch::Tensor tensor, double mean, double std, double a, double b);

}  // namespace moa
