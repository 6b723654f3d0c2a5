// Real image files for the data tests, written at test time by libjpeg-turbo and libpng:
// deterministic patterns with edges, gradients and noise so that resampling and colour code
// paths see every kind of pixel neighbourhood.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/image_io.h"

namespace moa::data::test {

/// A width x height pattern with `channels` interleaved 8-bit channels, varied by `seed`.
RawImage Pattern(int width, int height, int channels, uint64_t seed);

/// Writes `image` as JPEG (quality 90) or PNG (by the path's extension), atomically; fails the
/// test on error.
void WriteImage(const std::string& path, const RawImage& image, int png_bit_depth = 8);

/// Writes root/<env>/<class>/img<i>.{jpg,png} for every environment and class, `per_class`
/// images each: JPEG and PNG alternating, sizes about 20 x 16 varying, every fifth grayscale.
void WriteImageFolder(const std::string& root, const std::vector<std::string>& environments,
                      const std::vector<std::string>& classes, int per_class);

/// An RgbImage with the same pixels as a 3-channel RawImage.
RgbImage ToRgb(const RawImage& image);

}  // namespace moa::data::test
