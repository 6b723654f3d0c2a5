// libFuzzer target: the IDX reader (data/idx.h) on any bytes, plain or gzipped. A file it
// accepts uncompressed holds exactly the header and the payload the header announces.
#include <cstdio>
#include <cstdlib>

#include "data/idx.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static moa::fuzz::MemoryFile file;
  file.Write(moa::fuzz::InputText(data, size));
  const absl::StatusOr<torch::Tensor> tensor = moa::data::ReadIdx(file.Path());
  const bool gzipped = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  if (tensor.ok() && !gzipped) {
    const size_t expected = 4 + 4 * static_cast<size_t>(tensor->dim()) + tensor->nbytes();
    if (expected != size) {
      std::fprintf(stderr, "ReadIdx accepted %zu bytes holding %zu\n", size, expected);
      std::abort();
    }
  }
  return 0;
}
