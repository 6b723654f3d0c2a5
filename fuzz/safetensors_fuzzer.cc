// libFuzzer target: the safetensors parser (common/safetensors.h) on any bytes: the 8-byte
// header length, the JSON header and the tensor index. Whatever it accepts fits in the input.
#include <cstdio>
#include <cstdlib>

#include "common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<moa::SafetensorsFile> file =
      moa::ParseSafetensors(reinterpret_cast<const char*>(data), size, "fuzz input");
  if (!file.ok()) return 0;
  size_t tensor_bytes = 0;
  for (const auto& [name, tensor] : file->tensors) tensor_bytes += tensor.nbytes();
  if (tensor_bytes > size) {
    std::fprintf(stderr, "ParseSafetensors made %zu tensor bytes out of a %zu-byte input\n",
                 tensor_bytes, size);
    std::abort();
  }
  return 0;
}
