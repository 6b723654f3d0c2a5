// Reader for IDX files (the MNIST / Fashion-MNIST format), gzipped or not. Validates the magic
// number, the element type, the dimensions and the exact payload size, so that a truncated or
// corrupt file is an error naming the file; a header announcing more data than the file holds
// allocates no more than the file holds.
#pragma once

#include <string>

#include <absl/status/statusor.h>
#include <torch/torch.h>

namespace moa::data {

/// Reads `path` (plain or .gz, detected from the content) into a tensor of the file's element
/// type (uint8, int8, int16, int32, float32 or float64) and shape.
absl::StatusOr<torch::Tensor> ReadIdx(const std::string& path);

/// Writes `tensor` (uint8 or int32/float, contiguous on CPU) as an uncompressed IDX file; used by
/// tests and tools.
absl::Status WriteIdx(const std::string& path, const torch::Tensor& tensor);

}  // namespace moa::data
