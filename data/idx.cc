#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/files.h"

namespace moa::data {
namespace {

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};

// Reads exactly `size` bytes; returns the number read (short on end of file).
int64_t ReadFully(gzFile file, void* buffer, int64_t size) {
  int64_t done = 0;
  auto* out = static_cast<char*>(buffer);
  while (done < size) {
    const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(size - done, 1 << 30));
    const int n = gzread(file, out + done, chunk);
    if (n <= 0) break;
    done += n;
  }
  return done;
}

// Reads up to `size` bytes, to the end of the file if it is shorter. The buffer grows with what
// the file holds (doubling from 64 KiB), so a header announcing more than the file has costs no
// allocation of the announced size.
std::string ReadUpTo(gzFile file, int64_t size) {
  std::string bytes;
  while (static_cast<int64_t>(bytes.size()) < size) {
    const int64_t have = static_cast<int64_t>(bytes.size());
    const int64_t want = std::min(size - have, std::max<int64_t>(have, 64 << 10));
    bytes.resize(have + want);
    const int64_t got = ReadFully(file, bytes.data() + have, want);
    bytes.resize(have + got);
    if (got < want) break;
  }
  return bytes;
}

struct ElementType {
  torch::ScalarType scalar;
  int bytes;
};

bool TypeFromCode(uint8_t code, ElementType* type) {
  switch (code) {
    case 0x08:
      *type = {torch::kUInt8, 1};
      return true;
    case 0x09:
      *type = {torch::kInt8, 1};
      return true;
    case 0x0B:
      *type = {torch::kInt16, 2};
      return true;
    case 0x0C:
      *type = {torch::kInt32, 4};
      return true;
    case 0x0D:
      *type = {torch::kFloat32, 4};
      return true;
    case 0x0E:
      *type = {torch::kFloat64, 8};
      return true;
    default:
      return false;
  }
}

uint8_t CodeFromType(torch::ScalarType scalar) {
  switch (scalar) {
    case torch::kUInt8:
      return 0x08;
    case torch::kInt8:
      return 0x09;
    case torch::kInt16:
      return 0x0B;
    case torch::kInt32:
      return 0x0C;
    case torch::kFloat32:
      return 0x0D;
    case torch::kFloat64:
      return 0x0E;
    default:
      return 0;
  }
}

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

}  // namespace

absl::StatusOr<torch::Tensor> ReadIdx(const std::string& path) {
  std::unique_ptr<gzFile_s, GzCloser> file(gzopen(path.c_str(), "rb"));
  if (!file) return absl::NotFoundError("IDX file " + path + ": cannot open");
  gzbuffer(file.get(), 1 << 20);

  std::array<uint8_t, 4> magic{};
  if (ReadFully(file.get(), magic.data(), 4) != 4) {
    return absl::DataLossError("IDX file " + path + ": shorter than its 4-byte magic number");
  }
  ElementType type{};
  if (magic[0] != 0 || magic[1] != 0 || !TypeFromCode(magic[2], &type)) {
    char hex[16];
    std::snprintf(hex, sizeof(hex), "%02x%02x%02x%02x", magic[0], magic[1], magic[2], magic[3]);
    return absl::DataLossError("IDX file " + path + ": bad magic number 0x" + hex +
                               " (expected 0x0000TTDD with a known type TT)");
  }
  const int ndims = magic[3];
  if (ndims < 1 || ndims > 8) {
    return absl::DataLossError("IDX file " + path + ": " + std::to_string(ndims) +
                               " dimensions (expected 1 to 8)");
  }
  std::vector<uint8_t> dim_bytes(4 * ndims);
  if (ReadFully(file.get(), dim_bytes.data(), dim_bytes.size()) !=
      static_cast<int64_t>(dim_bytes.size())) {
    return absl::DataLossError("IDX file " + path + ": truncated in its dimension header");
  }
  std::vector<int64_t> shape(ndims);
  int64_t count = 1;
  for (int d = 0; d < ndims; ++d) {
    shape[d] = BigEndian32(&dim_bytes[4 * d]);
    if (shape[d] == 0 || count > (int64_t{1} << 40) / shape[d]) {
      return absl::DataLossError("IDX file " + path + ": implausible dimension " +
                                 std::to_string(shape[d]) + " at position " + std::to_string(d));
    }
    count *= shape[d];
  }
  const int64_t payload = count * type.bytes;
  const std::string bytes = ReadUpTo(file.get(), payload);
  const int64_t got = static_cast<int64_t>(bytes.size());
  int errnum = 0;
  const char* zmsg = gzerror(file.get(), &errnum);
  if (errnum != Z_OK && errnum != Z_STREAM_END) {
    return absl::DataLossError("IDX file " + path + ": corrupt compressed data (" + zmsg + ")");
  }
  if (got != payload) {
    return absl::DataLossError("IDX file " + path + ": truncated, the header announces " +
                               std::to_string(payload) + " payload bytes but only " +
                               std::to_string(got) + " are present");
  }
  char extra;
  if (ReadFully(file.get(), &extra, 1) != 0) {
    return absl::DataLossError("IDX file " + path +
                               ": trailing bytes after the payload the header announces");
  }
  torch::Tensor tensor = torch::empty(shape, torch::TensorOptions().dtype(type.scalar));
  auto* elements = static_cast<uint8_t*>(tensor.data_ptr());
  std::memcpy(elements, bytes.data(), bytes.size());
  if (type.bytes > 1) {
    // IDX stores multi-byte elements big-endian.
    for (int64_t i = 0; i < count; ++i)
      std::reverse(elements + i * type.bytes, elements + (i + 1) * type.bytes);
  }
  return tensor;
}

absl::Status WriteIdx(const std::string& path, const torch::Tensor& tensor) {
  const uint8_t code = CodeFromType(tensor.scalar_type());
  if (code == 0) return absl::InvalidArgumentError("WriteIdx: unsupported dtype for " + path);
  torch::Tensor t = tensor.contiguous().cpu();
  std::string out;
  out.push_back(0);
  out.push_back(0);
  out.push_back(static_cast<char>(code));
  out.push_back(static_cast<char>(t.dim()));
  for (int64_t d : t.sizes()) {
    for (int shift = 24; shift >= 0; shift -= 8)
      out.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  const int elem = static_cast<int>(t.element_size());
  const auto* bytes = static_cast<const char*>(t.data_ptr());
  for (int64_t i = 0; i < t.numel(); ++i) {
    for (int b = elem - 1; b >= 0; --b) out.push_back(bytes[i * elem + b]);
  }
  return WriteFileAtomically(path, out);
}

}  // namespace moa::data
