// Image files in and out: JPEG through libjpeg-turbo and PNG through libpng, decoded to 8-bit RGB
// the way torchvision's ImageFolder gets it from PIL (Image.open(path).convert("RGB")), and
// writers that the tests and the benchmark use to make real image files.
//
//   absl::StatusOr<moa::data::RgbImage> image = moa::data::DecodeImageFile("cat.jpg");
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace moa::data {

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (height x width x 3).
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;

  uint8_t* Row(int y) { return pixels.data() + static_cast<size_t>(y) * width * 3; }
  const uint8_t* Row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * 3; }
};

enum class ImageFormat { kUnknown, kJpeg, kPng };

/// What a file's header says, without decoding its pixels.
struct ImageHeader {
  ImageFormat format = ImageFormat::kUnknown;
  int width = 0;
  int height = 0;
};

/// The format a file's first bytes announce (JPEG's FF D8 FF, PNG's signature).
ImageFormat SniffFormat(const std::string& bytes);

/// Decodes JPEG (grayscale, RGB/YCbCr, CMYK/YCCK with Adobe inversion as PIL does) or PNG (any
/// bit depth and colour type: 16-bit keeps the high byte, palettes are expanded, alpha is
/// dropped as PIL's convert("RGB") drops it). `name` goes into error messages. A JPEG whose data
/// ends early is an error, as in PIL, and so is an image of more pixels than PIL opens
/// (2 x 89478485), refused from its header before anything of that size is allocated.
absl::StatusOr<RgbImage> DecodeImage(const std::string& bytes, const std::string& name);

/// Whether a file name ends in an extension this decoder reads (.jpg, .jpeg, .png; any case).
bool HasDecodableImageExtension(const std::string& name);

/// Reads and decodes a file; errors name the path.
absl::StatusOr<RgbImage> DecodeImageFile(const std::string& path);

/// Reads a file's header (format and size); errors name the path. An image too large to decode
/// (above) is refused here already.
absl::StatusOr<ImageHeader> ReadImageHeader(const std::string& path);

/// A raw 8-bit image with 1 (gray), 2 (gray + alpha), 3 (RGB), 4 (RGBA, or CMYK for JPEG)
/// interleaved channels, for the writers.
struct RawImage {
  int width = 0;
  int height = 0;
  int channels = 3;
  std::vector<uint8_t> samples;
};

/// Encodes a JPEG (channels 1, 3 or 4 = CMYK written with an Adobe marker and inverted samples,
/// as Photoshop and PIL write it) at `quality`.
absl::StatusOr<std::string> EncodeJpeg(const RawImage& image, int quality);

/// Encodes a PNG; `bit_depth` 16 widens each sample v to v * 257.
absl::StatusOr<std::string> EncodePng(const RawImage& image, int bit_depth = 8);

}  // namespace moa::data
