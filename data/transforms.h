// Image transforms with the semantics torchvision gives them on PIL images (docs/method.md,
// Training protocol), computed as Pillow computes them: RandomResizedCrop(224, scale 0.7-1, ratio
// 3/4-4/3) with PIL's antialiased bilinear resampling (fixed-point coefficients), horizontal flip,
// ColorJitter(0.3, 0.3, 0.3, 0.3) in a random order through Pillow's ImageEnhance blends and HSV
// conversion, RandomGrayscale(0.1), then ToTensor and the CLIP normalisation. Evaluation resizes to
// 224 x 224 (no crop) and normalises. The random parameters of one sample come from a generator
// keyed by (seed, step, domain, position in the global batch) (docs/architecture.md, Keyed
// randomness).
//
//   AugmentParams p = SampleAugment({seed, step, domain, position}, image.width, image.height);
//   TrainTransform(image, p, 224, out);  // writes 3 x 224 x 224 floats
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>

#include "data/image_io.h"

namespace moa::data {

/// A rectangle of the source image (pixels), as torchvision's (i, j, h, w) = (top, left, ...).
struct CropBox {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

/// ColorJitter's parameters: the order in which brightness (0), contrast (1), saturation (2) and
/// hue (3) apply, and their factors.
struct JitterParams {
  std::array<int, 4> order = {0, 1, 2, 3};
  double brightness = 1.0;
  double contrast = 1.0;
  double saturation = 1.0;
  double hue = 0.0;
};

/// Everything random about one training sample's augmentation.
struct AugmentParams {
  CropBox crop;
  bool flip = false;
  JitterParams jitter;
  bool grayscale = false;
};

/// The augmentation's settings: the reference's by default.
struct AugmentSpec {
  double scale_min = 0.7, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  double flip_p = 0.5;
  double brightness = 0.3, contrast = 0.3, saturation = 0.3, hue = 0.3;
  double grayscale_p = 0.1;
};

/// Draws one sample's parameters from a generator keyed by `key` for a width x height image,
/// with torchvision's distributions (RandomResizedCrop.get_params with its 10 tries and central
/// fallback; randperm order and uniform factors for ColorJitter).
AugmentParams SampleAugment(std::initializer_list<uint64_t> key, int width, int height,
                            const AugmentSpec& spec = {});

/// PIL's Image.crop(box).resize((out_width, out_height), BILINEAR): separable, antialiased
/// (support scaled by the reduction factor), horizontal pass then vertical, 22-bit fixed point.
RgbImage ResizeLikePil(const RgbImage& image, const CropBox& box, int out_width, int out_height);

/// The single operations, in place, as torchvision.transforms.functional on PIL images.
void FlipHorizontal(RgbImage* image);
void AdjustBrightness(RgbImage* image, double factor);
void AdjustContrast(RgbImage* image, double factor);
void AdjustSaturation(RgbImage* image, double factor);
void AdjustHue(RgbImage* image, double hue_factor);
void ToGrayscale(RgbImage* image);  // three equal channels
void ApplyJitter(RgbImage* image, const JitterParams& jitter);

/// The training transform up to ToTensor: crop-resize to size x size, flip, jitter, grayscale.
RgbImage AugmentPixels(const RgbImage& image, const AugmentParams& params, int size);

/// The OpenAI-CLIP normalisation constants.
inline constexpr std::array<float, 3> kClipMean = {0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr std::array<float, 3> kClipStd = {0.26862954f, 0.26130258f, 0.27577711f};

/// ToTensor + Normalize(CLIP): writes 3 x H x W floats (v / 255 - mean) / std to `out`.
void NormalizeInto(const RgbImage& image, float* out);

/// The whole training transform into 3 x size x size floats.
void TrainTransform(const RgbImage& image, const AugmentParams& params, int size, float* out);

/// The evaluation transform: Resize((size, size)) and the normalisation, into `out`.
void EvalTransform(const RgbImage& image, int size, float* out);

}  // namespace moa::data
