// Image rotation with the exact semantics of PIL's Image.rotate(angle, BILINEAR, fillcolor=0) on
// a single-channel 8-bit image, which is what torchvision's rotate does to the PIL images that
// DomainBed's RotatedMNIST builds.
#pragma once

#include <torch/torch.h>

namespace moa::data {

/// Rotates every image of `images` (uint8, N x H x W) counter-clockwise by `degrees` about the
/// image centre, bilinear, zero fill; returns uint8 N x H x W.
torch::Tensor RotateLikePil(const torch::Tensor& images, double degrees);

}  // namespace moa::data
