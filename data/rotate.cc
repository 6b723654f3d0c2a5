#include "data/rotate.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace moa::data {
namespace {

// Python's round(x, 15) as PIL uses it for the rotation matrix entries: the decimal rounding of
// x's exact binary value, read back. (Scaling by 1e15 first rounds the product: sin(45 degrees)
// then comes out one unit of the 15th digit off, and pixels on a truncation boundary one level.)
double Round15(double x) {
  char digits[64];
  std::snprintf(digits, sizeof(digits), "%.15f", x);
  return std::strtod(digits, nullptr);
}

}  // namespace

torch::Tensor RotateLikePil(const torch::Tensor& images, double degrees) {
  TORCH_CHECK(images.dim() == 3 && images.scalar_type() == torch::kUInt8,
              "RotateLikePil expects uint8 N x H x W");
  torch::Tensor in = images.contiguous();
  double angle = std::fmod(degrees, 360.0);
  if (angle < 0) angle += 360.0;
  if (angle == 0.0) return in.clone();
  const int64_t n = in.size(0), h = in.size(1), w = in.size(2);
  // PIL: inverse matrix of the rotation about (w/2, h/2), mapping output to input coordinates.
  const double rad = -(angle * (M_PI / 180.0));  // Python's -math.radians(angle)
  const double a = Round15(std::cos(rad)), b = Round15(std::sin(rad));
  const double d = Round15(-std::sin(rad)), e = Round15(std::cos(rad));
  const double cx = w / 2.0, cy = h / 2.0;
  const double c = a * (-cx) + b * (-cy) + cx;
  const double f = d * (-cx) + e * (-cy) + cy;

  torch::Tensor out = torch::zeros_like(in);
  const uint8_t* src_all = in.data_ptr<uint8_t>();
  uint8_t* dst_all = out.data_ptr<uint8_t>();
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t* src = src_all + i * h * w;
      uint8_t* dst = dst_all + i * h * w;
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
          const double xo = x + 0.5, yo = y + 0.5;
          double xin = a * xo + b * yo + c;
          double yin = d * xo + e * yo + f;
          // PIL's bilinear_filter8: outside the image keeps the fill colour.
          if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) continue;
          xin -= 0.5;
          yin -= 0.5;
          const int64_t x0 = static_cast<int64_t>(std::floor(xin));
          const int64_t y0 = static_cast<int64_t>(std::floor(yin));
          const double dx = xin - x0, dy = yin - y0;
          auto clip_x = [w](int64_t v) { return v < 0 ? 0 : (v >= w ? w - 1 : v); };
          const int64_t yc = y0 < 0 ? 0 : (y0 >= h ? h - 1 : y0);
          const int64_t xa = clip_x(x0), xb = clip_x(x0 + 1);
          const uint8_t* row = src + yc * w;
          double v1 = row[xa] + (static_cast<double>(row[xb]) - row[xa]) * dx;
          double v2 = v1;
          if (y0 + 1 >= 0 && y0 + 1 < h) {
            const uint8_t* row2 = src + (y0 + 1) * w;
            v2 = row2[xa] + (static_cast<double>(row2[xb]) - row2[xa]) * dx;
          }
          v1 = v1 + (v2 - v1) * dy;
          dst[y * w + x] = static_cast<uint8_t>(v1);
        }
      }
    }
  });
  return out;
}

}  // namespace moa::data
