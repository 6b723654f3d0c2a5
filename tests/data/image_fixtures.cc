#include "tests/data/image_fixtures.h"

#include <cmath>

#include <gtest/gtest.h>

#include "common/files.h"
#include "common/splitmix.h"

namespace moa::data::test {

RawImage Pattern(int width, int height, int channels, uint64_t seed) {
  RawImage image;
  image.width = width;
  image.height = height;
  image.channels = channels;
  image.samples.resize(static_cast<size_t>(width) * height * channels);
  uint64_t state = SplitMix64(seed);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        state = SplitMix64(state);
        // A smooth wave per channel, a hard diagonal edge and some noise.
        const double wave = 127.5 + 100.0 * std::sin(0.21 * x * (c + 1) + 0.13 * y + seed);
        const double edge = (x + 2 * y) % 23 < 5 ? 60.0 : 0.0;
        const double noise = static_cast<double>(state % 41) - 20.0;
        const double v = wave - edge + noise;
        image.samples[(static_cast<size_t>(y) * width + x) * channels + c] =
            static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
      }
    }
  }
  return image;
}

void WriteImage(const std::string& path, const RawImage& image, int png_bit_depth) {
  const bool png = path.size() > 4 && path.substr(path.size() - 4) == ".png";
  absl::StatusOr<std::string> bytes = png ? EncodePng(image, png_bit_depth) : EncodeJpeg(image, 90);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const absl::Status written = WriteFileAtomically(path, *bytes);
  ASSERT_TRUE(written.ok()) << written;
}

void WriteImageFolder(const std::string& root, const std::vector<std::string>& environments,
                      const std::vector<std::string>& classes, int per_class) {
  uint64_t seed = 0;
  for (const std::string& env : environments) {
    for (const std::string& cls : classes) {
      const std::string dir = root + "/" + env + "/" + cls;
      const absl::Status made = MakeDirs(dir);
      ASSERT_TRUE(made.ok()) << made;
      for (int i = 0; i < per_class; ++i) {
        ++seed;
        const std::string ext = seed % 2 == 0 ? ".png" : ".jpg";
        WriteImage(dir + "/img" + std::to_string(i) + ext,
                   Pattern(20 + static_cast<int>(seed % 7), 16 + static_cast<int>(seed % 5),
                           seed % 5 == 0 ? 1 : 3, seed));
      }
    }
  }
}

RgbImage ToRgb(const RawImage& image) {
  RgbImage rgb;
  rgb.width = image.width;
  rgb.height = image.height;
  rgb.pixels = image.samples;
  return rgb;
}

}  // namespace moa::data::test
