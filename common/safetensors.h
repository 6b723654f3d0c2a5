// safetensors reading and writing (the format timm, OpenCLIP and PEFT publish): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, __metadata__},
// then the raw little-endian tensor bytes. Every header field is validated, so a malformed file
// is an error naming the file and the problem, never a crash.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/torch.h>

namespace moa {

struct SafetensorsFile {
  /// Tensors in the file's dtype (F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL), on the CPU.
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

/// Reads a file through a read-only memory map (tensors are copied out of it).
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);
/// The metadata of a file whose header is checked as ReadSafetensors checks it, without copying
/// its tensors.
absl::StatusOr<std::map<std::string, std::string>> ReadSafetensorsMetadata(const std::string& path);
/// Parses an in-memory file image; `origin` names it in errors.
absl::StatusOr<SafetensorsFile> ParseSafetensors(const std::string& bytes,
                                                 const std::string& origin);
/// The same on `size` bytes at `data` (e.g. a memory-mapped file).
absl::StatusOr<SafetensorsFile> ParseSafetensors(const char* data, size_t size,
                                                 const std::string& origin);

/// Writes tensors (sorted by name, as the Python package does) atomically.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace moa
