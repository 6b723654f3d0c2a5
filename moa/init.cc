#include "moa/init.h"

#include <cmath>

namespace moa {

void TruncNormal_(torch::Tensor tensor, double mean, double std, double a, double b) {
  torch::NoGradGuard no_grad;
  auto norm_cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double low = norm_cdf((a - mean) / std);
  const double high = norm_cdf((b - mean) / std);
  tensor.uniform_(2 * low - 1, 2 * high - 1);
  tensor.erfinv_();
  tensor.mul_(std * std::sqrt(2.0));
  tensor.add_(mean);
  tensor.clamp_(a, b);
}

}  // namespace moa
