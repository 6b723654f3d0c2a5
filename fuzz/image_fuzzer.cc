// libFuzzer target: JPEG and PNG decoding (data/image_io.h) on any bytes, through both entry
// points: DecodeImage on the bytes and ReadImageHeader on a file holding them. When both succeed
// they agree on the size, and the pixels fill exactly width x height x 3 bytes.
#include <cstdio>
#include <cstdlib>

#include "data/image_io.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static moa::fuzz::MemoryFile file;
  const std::string bytes = moa::fuzz::InputText(data, size);
  file.Write(bytes);
  const absl::StatusOr<moa::data::RgbImage> image = moa::data::DecodeImage(bytes, "fuzz input");
  const absl::StatusOr<moa::data::ImageHeader> header = moa::data::ReadImageHeader(file.Path());
  if (image.ok()) {
    if (image->pixels.size() != static_cast<size_t>(image->width) * image->height * 3) {
      std::fprintf(stderr, "%dx%d image with %zu pixel bytes\n", image->width, image->height,
                   image->pixels.size());
      std::abort();
    }
    if (header.ok() && (header->width != image->width || header->height != image->height)) {
      std::fprintf(stderr, "header says %dx%d, decoding gives %dx%d\n", header->width,
                   header->height, image->width, image->height);
      std::abort();
    }
  }
  return 0;
}
