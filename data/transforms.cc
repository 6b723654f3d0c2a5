// The transforms of data/transforms.h. About 430 lines, one file on purpose: Pillow's resampling,
// blends and HSV conversion are reproduced bit for bit here, next to the torchvision steps that
// use them, so each can be read against its original in one place.
#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "data/keyed_rng.h"

namespace moa::data {
namespace {

// Pillow's Resample.c: coefficients in 22-bit fixed point, 8-bit results clipped.
constexpr int kPrecisionBits = 32 - 8 - 2;

uint8_t Clip8(int32_t value) {
  if (value >= (1 << kPrecisionBits << 8)) return 255;
  if (value <= 0) return 0;
  return static_cast<uint8_t>(value >> kPrecisionBits);
}

// One pass's taps: for output pixel i, `count[i]` integer weights from source pixel `first[i]`.
struct Taps {
  int size = 0;  // weights per output pixel (PIL's ksize)
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

// Pillow's precompute_coeffs with the bilinear filter and normalize_coeffs_8bpc, for `in_size`
// source pixels resampled to `out_size`.
Taps BilinearTaps(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;
  Taps taps;
  taps.size = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.first.resize(out_size);
  taps.count.resize(out_size);
  taps.weights.assign(static_cast<size_t>(out_size) * taps.size, 0);
  std::vector<double> k(taps.size);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filter_scale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      double t = (x + xmin - center + 0.5) * ss;
      if (t < 0.0) t = -t;
      const double w = t < 1.0 ? 1.0 - t : 0.0;
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? k[x] / ww : k[x];
      taps.weights[static_cast<size_t>(xx) * taps.size + x] = static_cast<int32_t>(
          v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    taps.first[xx] = xmin;
    taps.count[xx] = xmax;
  }
  return taps;
}

// Pillow's ImagingBlend(degenerate, image, alpha) for one sample, alpha as a C float.
inline uint8_t Blend(int degenerate, int value, float alpha) {
  const float mixed =
      static_cast<float>(degenerate) + alpha * static_cast<float>(value - degenerate);
  if (alpha >= 0.0f && alpha <= 1.0f) return static_cast<uint8_t>(mixed);
  if (mixed <= 0.0f) return 0;
  if (mixed >= 255.0f) return 255;
  return static_cast<uint8_t>(mixed);
}

// Pillow's ITU-R 601-2 luma: L24(rgb) >> 16.
inline uint8_t Luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
}

inline uint8_t ClipInt(int v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// Python's round() as C's round(): half away from zero, for x >= 0, without a libm call.
inline int RoundHalfAway(double x) {
  const int whole = static_cast<int>(x);
  return whole + (x - whole >= 0.5 ? 1 : 0);
}

// Pillow's rgb2hsv_row (colorsys) computes the hue from the differences of the channels to the
// largest one, in float and double arithmetic; fmod(x, 1.0) of x in [5/6, 11/6) is x or x - 1.
// `largest` 0, 1, 2: red, green (and not red), blue is the largest; d1, d2 the differences of
// the other two channels in RGB order.
uint8_t PillowHue(int largest, int d1, int d2) {
  const float cr = static_cast<float>(std::max(d1, d2));
  const float first = static_cast<float>(d1) / cr, second = static_cast<float>(d2) / cr;
  float h;
  if (largest == 0) {
    h = second - first;  // bc - gc
  } else if (largest == 1) {
    h = static_cast<float>(2.0 + first - second);  // 2 + rc - bc
  } else {
    h = static_cast<float>(4.0 + second - first);  // 4 + gc - rc
  }
  const double wrapped = h / 6.0 + 1.0;
  h = static_cast<float>(wrapped >= 1.0 ? wrapped - 1.0 : wrapped);
  return ClipInt(static_cast<int>(h * 255.0));
}

// Pillow's HSV conversions as tables, each entry computed once with Pillow's expressions: hue
// by (largest channel, the other two differences), saturation (int)(float(max - min) /
// float(max) * 255.0); for hsv2rgb the sector floor(h * 6.0 / 255.0), the float remainder f and
// fs = s / 255.0 as a float.
struct HsvTables {
  uint8_t hue[3][256][256];
  uint8_t saturation[256][256];  // [max - min][max]
  uint8_t sector[256];
  float remainder[256];
  float fs[256];

  HsvTables() {
    for (int largest = 0; largest < 3; ++largest) {
      for (int d1 = 0; d1 < 256; ++d1) {
        for (int d2 = 0; d2 < 256; ++d2) {
          hue[largest][d1][d2] = d1 == 0 && d2 == 0 ? 0 : PillowHue(largest, d1, d2);
        }
      }
    }
    for (int cr = 0; cr < 256; ++cr) {
      for (int maxc = 0; maxc < 256; ++maxc) {
        const float s = maxc > 0 ? static_cast<float>(cr) / static_cast<float>(maxc) : 0.0f;
        saturation[cr][maxc] = ClipInt(static_cast<int>(s * 255.0));
      }
    }
    for (int v = 0; v < 256; ++v) {
      const int i = static_cast<int>(std::floor(static_cast<float>(v) * 6.0 / 255.0));
      sector[v] = static_cast<uint8_t>(i % 6);
      remainder[v] =
          static_cast<float>(static_cast<float>(v) * 6.0 / 255.0 - static_cast<float>(i));
      fs[v] = static_cast<float>(static_cast<float>(v) / 255.0);
    }
  }
};

const HsvTables& Hsv() {
  static const HsvTables tables;
  return tables;
}

// Pillow's rgb2hsv_row through the tables (ties go to red, then green, as its branches do).
inline void RgbToHsv(const HsvTables& tables, const uint8_t* rgb, uint8_t* hsv) {
  const int r = rgb[0], g = rgb[1], b = rgb[2];
  const int maxc = std::max(r, std::max(g, b));
  const int minc = std::min(r, std::min(g, b));
  hsv[2] = static_cast<uint8_t>(maxc);
  if (minc == maxc) {
    hsv[0] = hsv[1] = 0;
    return;
  }
  if (r == maxc) {
    hsv[0] = tables.hue[0][maxc - g][maxc - b];
  } else if (g == maxc) {
    hsv[0] = tables.hue[1][maxc - r][maxc - b];
  } else {
    hsv[0] = tables.hue[2][maxc - r][maxc - g];
  }
  hsv[1] = tables.saturation[maxc - minc][maxc];
}

// Pillow's hsv2rgb.
inline void HsvToRgb(const HsvTables& tables, const uint8_t* hsv, uint8_t* rgb) {
  const uint8_t h = hsv[0], s = hsv[1], v = hsv[2];
  if (s == 0) {
    rgb[0] = rgb[1] = rgb[2] = v;
    return;
  }
  const float f = tables.remainder[h];
  const float fs = tables.fs[s];
  const double value = static_cast<float>(v);
  const uint8_t p = ClipInt(RoundHalfAway(value * (1.0 - fs)));
  const uint8_t q = ClipInt(RoundHalfAway(value * (1.0 - fs * f)));
  const uint8_t t = ClipInt(RoundHalfAway(value * (1.0 - fs * (1.0 - f))));
  switch (tables.sector[h]) {
    case 0:
      rgb[0] = v, rgb[1] = t, rgb[2] = p;
      break;
    case 1:
      rgb[0] = q, rgb[1] = v, rgb[2] = p;
      break;
    case 2:
      rgb[0] = p, rgb[1] = v, rgb[2] = t;
      break;
    case 3:
      rgb[0] = p, rgb[1] = q, rgb[2] = v;
      break;
    case 4:
      rgb[0] = t, rgb[1] = p, rgb[2] = v;
      break;
    default:
      rgb[0] = v, rgb[1] = p, rgb[2] = q;
      break;
  }
}

// Blend(degenerate, v, alpha) for every v, where `degenerate` is one value for the image.
std::array<uint8_t, 256> BlendTable(int degenerate, float alpha) {
  std::array<uint8_t, 256> table;
  for (int v = 0; v < 256; ++v) table[v] = Blend(degenerate, v, alpha);
  return table;
}

size_t PixelCount(const RgbImage& image) { return static_cast<size_t>(image.width) * image.height; }

}  // namespace

AugmentParams SampleAugment(std::initializer_list<uint64_t> key, int width, int height,
                            const AugmentSpec& spec) {
  KeyedRng rng(key);
  AugmentParams params;
  // RandomResizedCrop.get_params.
  const double area = static_cast<double>(width) * height;
  const double log_ratio_min = std::log(spec.ratio_min), log_ratio_max = std::log(spec.ratio_max);
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target_area = area * rng.Uniform(spec.scale_min, spec.scale_max);
    const double aspect = std::exp(rng.Uniform(log_ratio_min, log_ratio_max));
    // Python's round(): half to even, which nearbyint does in the default rounding mode.
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target_area * aspect)));
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      params.crop.top = static_cast<int>(rng.Below(static_cast<uint64_t>(height - h + 1)));
      params.crop.left = static_cast<int>(rng.Below(static_cast<uint64_t>(width - w + 1)));
      params.crop.width = w;
      params.crop.height = h;
      found = true;
    }
  }
  if (!found) {  // central crop
    const double in_ratio = static_cast<double>(width) / height;
    int w = width, h = height;
    if (in_ratio < spec.ratio_min) {
      h = static_cast<int>(std::nearbyint(w / spec.ratio_min));
    } else if (in_ratio > spec.ratio_max) {
      w = static_cast<int>(std::nearbyint(h * spec.ratio_max));
    }
    params.crop = CropBox{(width - w) / 2, (height - h) / 2, w, h};
  }
  params.flip = rng.Uniform() < spec.flip_p;
  // ColorJitter.get_params: a random permutation (Fisher-Yates) and uniform factors.
  JitterParams& jitter = params.jitter;
  for (int i = 3; i > 0; --i) {
    std::swap(jitter.order[i], jitter.order[rng.Below(static_cast<uint64_t>(i + 1))]);
  }
  jitter.brightness = rng.Uniform(std::max(0.0, 1 - spec.brightness), 1 + spec.brightness);
  jitter.contrast = rng.Uniform(std::max(0.0, 1 - spec.contrast), 1 + spec.contrast);
  jitter.saturation = rng.Uniform(std::max(0.0, 1 - spec.saturation), 1 + spec.saturation);
  jitter.hue = rng.Uniform(-spec.hue, spec.hue);
  params.grayscale = rng.Uniform() < spec.grayscale_p;
  return params;
}

RgbImage ResizeLikePil(const RgbImage& image, const CropBox& box, int out_width, int out_height) {
  // torchvision crops first (pixels outside the box never contribute), then resizes the crop.
  const Taps horizontal = BilinearTaps(box.width, out_width);
  const Taps vertical = BilinearTaps(box.height, out_height);
  const int row_first = vertical.first[0];
  const int row_last = vertical.first[out_height - 1] + vertical.count[out_height - 1];
  // Horizontal pass over the source rows the vertical pass reads (PIL's ybox_first..last).
  RgbImage wide;
  wide.width = out_width;
  wide.height = row_last - row_first;
  wide.pixels.resize(PixelCount(wide) * 3);
  for (int y = 0; y < wide.height; ++y) {
    const uint8_t* src = image.Row(box.top + row_first + y) + 3 * box.left;
    uint8_t* dst = wide.Row(y);
    for (int x = 0; x < out_width; ++x) {
      const int32_t* k = horizontal.weights.data() + static_cast<size_t>(x) * horizontal.size;
      const uint8_t* s = src + 3 * horizontal.first[x];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int i = 0; i < horizontal.count[x]; ++i) {
        s0 += s[3 * i] * k[i];
        s1 += s[3 * i + 1] * k[i];
        s2 += s[3 * i + 2] * k[i];
      }
      dst[3 * x] = Clip8(s0);
      dst[3 * x + 1] = Clip8(s1);
      dst[3 * x + 2] = Clip8(s2);
    }
  }
  RgbImage out;
  out.width = out_width;
  out.height = out_height;
  out.pixels.resize(PixelCount(out) * 3);
  const size_t stride = static_cast<size_t>(out_width) * 3;
  std::vector<int32_t> sums(stride);
  for (int y = 0; y < out_height; ++y) {
    const int32_t* k = vertical.weights.data() + static_cast<size_t>(y) * vertical.size;
    std::fill(sums.begin(), sums.end(), 1 << (kPrecisionBits - 1));
    for (int i = 0; i < vertical.count[y]; ++i) {
      const uint8_t* src = wide.Row(vertical.first[y] - row_first + i);
      const int32_t weight = k[i];
      int32_t* sum = sums.data();
      for (size_t c = 0; c < stride; ++c) sum[c] += src[c] * weight;
    }
    uint8_t* dst = out.Row(y);
    for (size_t c = 0; c < stride; ++c) dst[c] = Clip8(sums[c]);
  }
  return out;
}

void FlipHorizontal(RgbImage* image) {
  for (int y = 0; y < image->height; ++y) {
    uint8_t* row = image->Row(y);
    for (int a = 0, b = image->width - 1; a < b; ++a, --b) {
      for (int c = 0; c < 3; ++c) std::swap(row[3 * a + c], row[3 * b + c]);
    }
  }
}

void AdjustBrightness(RgbImage* image, double factor) {
  // ImageEnhance.Brightness: blend with black.
  const std::array<uint8_t, 256> table = BlendTable(0, static_cast<float>(factor));
  for (uint8_t& v : image->pixels) v = table[v];
}

void AdjustContrast(RgbImage* image, double factor) {
  // ImageEnhance.Contrast: blend with the mean luma, rounded as int(mean + 0.5).
  const size_t n = PixelCount(*image);
  if (n == 0) return;
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += Luma(image->pixels.data() + 3 * i);
  const int mean = static_cast<int>(static_cast<double>(sum) / static_cast<double>(n) + 0.5);
  const std::array<uint8_t, 256> table = BlendTable(mean, static_cast<float>(factor));
  for (uint8_t& v : image->pixels) v = table[v];
}

void AdjustSaturation(RgbImage* image, double factor) {
  // ImageEnhance.Color: blend with the image's own luma.
  const float alpha = static_cast<float>(factor);
  const bool interpolate = alpha >= 0.0f && alpha <= 1.0f;
  const size_t n = PixelCount(*image);
  uint8_t* p = image->pixels.data();
  for (size_t i = 0; i < n; ++i, p += 3) {
    const float l = static_cast<float>(Luma(p));
    for (int c = 0; c < 3; ++c) {
      const float mixed = l + alpha * (static_cast<float>(p[c]) - l);
      p[c] = interpolate ? static_cast<uint8_t>(mixed)
                         : static_cast<uint8_t>(mixed <= 0.0f ? 0.0f : std::min(mixed, 255.0f));
    }
  }
}

void AdjustHue(RgbImage* image, double hue_factor) {
  // torchvision: np.uint8(hue_factor * 255) added to H with uint8 wrap-around; the float to
  // uint8 cast truncates towards zero and wraps as NumPy does on x86.
  const uint8_t shift = static_cast<uint8_t>(static_cast<int>(hue_factor * 255));
  const HsvTables& tables = Hsv();
  const size_t n = PixelCount(*image);
  for (size_t i = 0; i < n; ++i) {
    uint8_t* p = image->pixels.data() + 3 * i;
    uint8_t hsv[3];
    RgbToHsv(tables, p, hsv);
    hsv[0] = static_cast<uint8_t>(hsv[0] + shift);
    HsvToRgb(tables, hsv, p);
  }
}

void ToGrayscale(RgbImage* image) {
  const size_t n = PixelCount(*image);
  for (size_t i = 0; i < n; ++i) {
    uint8_t* p = image->pixels.data() + 3 * i;
    p[0] = p[1] = p[2] = Luma(p);
  }
}

void ApplyJitter(RgbImage* image, const JitterParams& jitter) {
  for (int op : jitter.order) {
    switch (op) {
      case 0:
        AdjustBrightness(image, jitter.brightness);
        break;
      case 1:
        AdjustContrast(image, jitter.contrast);
        break;
      case 2:
        AdjustSaturation(image, jitter.saturation);
        break;
      default:
        AdjustHue(image, jitter.hue);
        break;
    }
  }
}

RgbImage AugmentPixels(const RgbImage& image, const AugmentParams& params, int size) {
  RgbImage out = ResizeLikePil(image, params.crop, size, size);
  if (params.flip) FlipHorizontal(&out);
  ApplyJitter(&out, params.jitter);
  if (params.grayscale) ToGrayscale(&out);
  return out;
}

void NormalizeInto(const RgbImage& image, float* out) {
  // ToTensor (v / 255 in float) then Normalize ((x - mean) / std in float), as lookup tables.
  static const std::array<std::array<float, 256>, 3> kTable = [] {
    std::array<std::array<float, 256>, 3> table{};
    for (int c = 0; c < 3; ++c) {
      for (int v = 0; v < 256; ++v) {
        table[c][v] = (static_cast<float>(v) / 255.0f - kClipMean[c]) / kClipStd[c];
      }
    }
    return table;
  }();
  const size_t n = PixelCount(image);
  const uint8_t* p = image.pixels.data();
  for (int c = 0; c < 3; ++c) {
    float* plane = out + c * n;
    const std::array<float, 256>& table = kTable[c];
    for (size_t i = 0; i < n; ++i) plane[i] = table[p[3 * i + c]];
  }
}

void TrainTransform(const RgbImage& image, const AugmentParams& params, int size, float* out) {
  NormalizeInto(AugmentPixels(image, params, size), out);
}

void EvalTransform(const RgbImage& image, int size, float* out) {
  NormalizeInto(ResizeLikePil(image, CropBox{0, 0, image.width, image.height}, size, size), out);
}

}  // namespace moa::data
