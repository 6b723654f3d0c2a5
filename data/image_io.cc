#include "data/image_io.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "common/files.h"
#include "common/status_macros.h"

namespace moa::data {
namespace {

// NOTE [libjpeg errors]: libjpeg reports fatal errors through error_exit, which must not
// return; we longjmp back to the decoder's frame, which holds no C++ objects that need
// destructors between setjmp and the longjmp.
struct JpegErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
  bool truncated = false;
  bool too_large = false;
};

// PIL refuses to open an image of more than twice Image.MAX_IMAGE_PIXELS (DecompressionBombError),
// so torchvision never sees one; moa refuses it too, from the header, before allocating for it.
constexpr uint64_t kMaxPixels = 2 * uint64_t{89478485};

bool TooLarge(uint64_t width, uint64_t height) { return width * height > kMaxPixels; }

absl::Status TooLargeError(const std::string& name, const char* format, uint64_t width,
                           uint64_t height) {
  return absl::ResourceExhaustedError(
      name + ": " + std::to_string(width) + " x " + std::to_string(height) + " " + format +
      " has more than the " + std::to_string(kMaxPixels) +
      " pixels PIL opens (a decompression bomb, or a corrupt header)");
}

void JpegErrorExit(j_common_ptr cinfo) {
  auto* manager = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, manager->message);
  std::longjmp(manager->jump, 1);
}

// Warnings are ignored as PIL ignores them, except data that ends before the image does (PIL
// raises "image file is truncated").
void JpegEmitMessage(j_common_ptr cinfo, int level) {
  if (level >= 0) return;
  auto* manager = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) manager->truncated = true;
}

// PIL's cmyk2rgb: nk = 255 - k, out = nk - nk * c / 255 (rounded as MULDIV255).
uint8_t CmykChannel(int c, int k) {
  const int nk = 255 - k;
  const int tmp = c * nk + 128;
  const int v = nk - (((tmp >> 8) + tmp) >> 8);
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Decodes into `image` (owned by the caller, so nothing in this frame needs a destructor after
// a longjmp: NOTE [libjpeg errors]). Returns false with `errors->message` set on failure, or
// with `errors->too_large` set (and the announced size in `image`) for an image over the pixel
// limit; stops early, returning true, once `errors->truncated` is set.
bool DecodeJpegInto(const std::string& bytes, JpegErrorManager* errors, RgbImage* image,
                    std::vector<uint8_t>* row) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&errors->base);
  errors->base.error_exit = JpegErrorExit;
  errors->base.emit_message = JpegEmitMessage;
  if (setjmp(errors->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (TooLarge(cinfo.image_width, cinfo.image_height)) {
    errors->too_large = true;
    image->width = static_cast<int>(cinfo.image_width);
    image->height = static_cast<int>(cinfo.image_height);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  const bool inverted = cmyk && cinfo.saw_Adobe_marker;
  if (cmyk) {
    cinfo.out_color_space = JCS_CMYK;
  } else if (cinfo.jpeg_color_space != JCS_GRAYSCALE) {
    cinfo.out_color_space = JCS_RGB;
  }
  jpeg_start_decompress(&cinfo);
  image->width = static_cast<int>(cinfo.output_width);
  image->height = static_cast<int>(cinfo.output_height);
  image->pixels.resize(static_cast<size_t>(image->width) * image->height * 3);
  const int components = cinfo.output_components;
  row->resize(static_cast<size_t>(image->width) * components);
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* out = image->Row(static_cast<int>(cinfo.output_scanline));
    JSAMPROW rows[1] = {components == 3 ? out : row->data()};
    jpeg_read_scanlines(&cinfo, rows, 1);
    if (errors->truncated) {
      // Stop at the first missing data: DecodeJpeg refuses a truncated image, as PIL does.
      jpeg_destroy_decompress(&cinfo);
      return true;
    }
    if (components == 3) continue;
    for (int x = 0; x < image->width; ++x) {
      if (components == 1) {
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = (*row)[x];
      } else {
        const uint8_t* s = row->data() + 4 * x;
        const int k = inverted ? 255 - s[3] : s[3];
        for (int c = 0; c < 3; ++c) out[3 * x + c] = CmykChannel(inverted ? 255 - s[c] : s[c], k);
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

absl::StatusOr<RgbImage> DecodeJpeg(const std::string& bytes, const std::string& name) {
  JpegErrorManager errors;
  RgbImage image;
  std::vector<uint8_t> row;
  if (!DecodeJpegInto(bytes, &errors, &image, &row)) {
    if (errors.too_large) return TooLargeError(name, "JPEG", image.width, image.height);
    return absl::DataLossError(name + ": corrupt JPEG (" + errors.message + ")");
  }
  if (errors.truncated) return absl::DataLossError(name + ": truncated JPEG (data ends early)");
  return image;
}

// libpng reads from memory through this cursor.
struct PngSource {
  const std::string* bytes;
  size_t offset;
};

void PngRead(png_structp png, png_bytep out, png_size_t length) {
  auto* source = static_cast<PngSource*>(png_get_io_ptr(png));
  if (source->offset + length > source->bytes->size()) png_error(png, "data ends early");
  std::memcpy(out, source->bytes->data() + source->offset, length);
  source->offset += length;
}

struct PngErrorState {
  char message[256] = {0};
  bool too_large = false;
};

void PngError(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngErrorState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof(state->message), "%s", message);
  png_longjmp(png, 1);
}

void PngWarning(png_structp, png_const_charp) {}

// Decodes (or, with `header` set, only reads the header) into caller-owned objects, as
// NOTE [libjpeg errors] explains for libjpeg. Returns false with `state->message` set.
bool DecodePngInto(const std::string& bytes, PngErrorState* state, RgbImage* image,
                   std::vector<png_bytep>* rows, ImageHeader* header) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, state, PngError, PngWarning);
  if (png == nullptr) {
    std::snprintf(state->message, sizeof(state->message), "libpng could not start");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  PngSource source{&bytes, 0};
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &source, PngRead);
  png_read_info(png, info);
  image->width = static_cast<int>(png_get_image_width(png, info));
  image->height = static_cast<int>(png_get_image_height(png, info));
  if (TooLarge(image->width, image->height)) {
    state->too_large = true;
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  if (header != nullptr) {
    *header = ImageHeader{ImageFormat::kPng, image->width, image->height};
    png_destroy_read_struct(&png, &info, nullptr);
    return true;
  }
  const int color_type = png_get_color_type(png, info);
  // PIL's convert("RGB"): 16-bit samples keep their high byte, palettes become their colours,
  // low-bit gray scales to 0..255, alpha (and a tRNS colour key) is dropped, gray is replicated.
  png_set_strip_16(png);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) {
    png_set_expand_gray_1_2_4_to_8(png);
    png_set_gray_to_rgb(png);
  }
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(image->width) * 3) {
    png_error(png, "unexpected row layout after conversion to RGB");
  }
  image->pixels.resize(static_cast<size_t>(image->width) * image->height * 3);
  rows->resize(image->height);
  for (int y = 0; y < image->height; ++y) (*rows)[y] = image->Row(y);
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

absl::StatusOr<RgbImage> DecodePng(const std::string& bytes, const std::string& name,
                                   ImageHeader* header) {
  PngErrorState state;
  RgbImage image;
  std::vector<png_bytep> rows;
  if (!DecodePngInto(bytes, &state, &image, &rows, header)) {
    if (state.too_large) return TooLargeError(name, "PNG", image.width, image.height);
    return absl::DataLossError(name + ": corrupt PNG (" + state.message + ")");
  }
  return image;
}

absl::StatusOr<ImageHeader> ReadJpegHeader(const std::string& bytes, const std::string& name) {
  jpeg_decompress_struct cinfo;
  JpegErrorManager errors;
  cinfo.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = JpegErrorExit;
  errors.base.emit_message = JpegEmitMessage;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return absl::DataLossError(name + ": corrupt JPEG header (" + errors.message + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  ImageHeader header{ImageFormat::kJpeg, static_cast<int>(cinfo.image_width),
                     static_cast<int>(cinfo.image_height)};
  jpeg_destroy_decompress(&cinfo);
  if (TooLarge(header.width, header.height)) {
    return TooLargeError(name, "JPEG", header.width, header.height);
  }
  return header;
}

absl::Status UnknownFormat(const std::string& name, const std::string& bytes) {
  if (bytes.empty()) return absl::DataLossError(name + ": empty file");
  return absl::DataLossError(name + ": neither JPEG nor PNG (unrecognised first bytes)");
}

}  // namespace

ImageFormat SniffFormat(const std::string& bytes) {
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
      static_cast<unsigned char>(bytes[1]) == 0xD8 &&
      static_cast<unsigned char>(bytes[2]) == 0xFF) {
    return ImageFormat::kJpeg;
  }
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0) return ImageFormat::kPng;
  return ImageFormat::kUnknown;
}

absl::StatusOr<RgbImage> DecodeImage(const std::string& bytes, const std::string& name) {
  switch (SniffFormat(bytes)) {
    case ImageFormat::kJpeg:
      return DecodeJpeg(bytes, name);
    case ImageFormat::kPng:
      return DecodePng(bytes, name, nullptr);
    case ImageFormat::kUnknown:
      break;
  }
  return UnknownFormat(name, bytes);
}

bool HasDecodableImageExtension(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

absl::StatusOr<RgbImage> DecodeImageFile(const std::string& path) {
  const absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeImage(*bytes, path);
}

namespace {

// The first `limit` bytes of a file (all of it when shorter); errors name the path.
absl::StatusOr<std::string> ReadPrefix(const std::string& path, size_t limit, bool* whole) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path + ": " + std::strerror(errno));
  std::string bytes(limit, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(limit));
  if (in.bad()) return absl::DataLossError("cannot read " + path);
  bytes.resize(static_cast<size_t>(in.gcount()));
  *whole = bytes.size() < limit || in.peek() == std::ifstream::traits_type::eof();
  return bytes;
}

absl::StatusOr<ImageHeader> ParseHeader(const std::string& bytes, const std::string& path) {
  switch (SniffFormat(bytes)) {
    case ImageFormat::kJpeg:
      return ReadJpegHeader(bytes, path);
    case ImageFormat::kPng: {
      ImageHeader header;
      MOA_RETURN_IF_ERROR(DecodePng(bytes, path, &header).status());
      return header;
    }
    case ImageFormat::kUnknown:
      break;
  }
  return UnknownFormat(path, bytes);
}

}  // namespace

absl::StatusOr<ImageHeader> ReadImageHeader(const std::string& path) {
  // Headers fit in the first 64 KiB unless large metadata (EXIF thumbnails, ICC profiles) comes
  // first; then the whole file is read.
  bool whole = false;
  const absl::StatusOr<std::string> prefix = ReadPrefix(path, 64 << 10, &whole);
  if (!prefix.ok()) return prefix.status();
  absl::StatusOr<ImageHeader> header = ParseHeader(*prefix, path);
  if (header.ok() || whole) return header;
  const absl::StatusOr<std::string> file = ReadFile(path);
  if (!file.ok()) return file.status();
  return ParseHeader(*file, path);
}

absl::StatusOr<std::string> EncodeJpeg(const RawImage& image, int quality) {
  if (image.channels != 1 && image.channels != 3 && image.channels != 4) {
    return absl::InvalidArgumentError("EncodeJpeg: channels must be 1, 3 or 4 (CMYK)");
  }
  jpeg_compress_struct cinfo;
  JpegErrorManager errors;
  cinfo.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = JpegErrorExit;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  std::vector<uint8_t> row(static_cast<size_t>(image.width) * image.channels);
  if (setjmp(errors.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buffer);
    return absl::InternalError(std::string("libjpeg: ") + errors.message);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(image.width);
  cinfo.image_height = static_cast<JDIMENSION>(image.height);
  cinfo.input_components = image.channels;
  cinfo.in_color_space =
      image.channels == 1 ? JCS_GRAYSCALE : (image.channels == 3 ? JCS_RGB : JCS_CMYK);
  jpeg_set_defaults(&cinfo);  // CMYK input: CMYK output with an Adobe marker
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = static_cast<size_t>(image.width) * image.channels;
  while (cinfo.next_scanline < cinfo.image_height) {
    const uint8_t* src = image.samples.data() + cinfo.next_scanline * stride;
    for (size_t i = 0; i < stride; ++i) row[i] = image.channels == 4 ? 255 - src[i] : src[i];
    JSAMPROW rows[1] = {row.data()};
    jpeg_write_scanlines(&cinfo, rows, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string bytes(reinterpret_cast<const char*>(buffer), size);
  std::free(buffer);
  return bytes;
}

namespace {

void PngWrite(png_structp png, png_bytep data, png_size_t length) {
  static_cast<std::string*>(png_get_io_ptr(png))
      ->append(reinterpret_cast<const char*>(data), length);
}

void PngFlush(png_structp) {}

}  // namespace

absl::StatusOr<std::string> EncodePng(const RawImage& image, int bit_depth) {
  if (image.channels < 1 || image.channels > 4 || (bit_depth != 8 && bit_depth != 16)) {
    return absl::InvalidArgumentError("EncodePng: 1 to 4 channels, bit depth 8 or 16");
  }
  static const int kColorType[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                    PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
  PngErrorState state;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, PngError, PngWarning);
  if (png == nullptr) return absl::ResourceExhaustedError("libpng could not start");
  png_infop info = png_create_info_struct(png);
  std::string bytes;
  const size_t samples_per_row = static_cast<size_t>(image.width) * image.channels;
  std::vector<uint8_t> row(samples_per_row * (bit_depth / 8));
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return absl::InternalError(std::string("libpng: ") + state.message);
  }
  png_set_write_fn(png, &bytes, PngWrite, PngFlush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.width),
               static_cast<png_uint_32>(image.height), bit_depth, kColorType[image.channels],
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* src = image.samples.data() + y * samples_per_row;
    for (size_t i = 0; i < samples_per_row; ++i) {
      if (bit_depth == 8) {
        row[i] = src[i];
      } else {  // big-endian v * 257: both bytes equal v
        row[2 * i] = row[2 * i + 1] = src[i];
      }
    }
    png_write_row(png, row.data());
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return bytes;
}

}  // namespace moa::data
