#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/status_macros.h"

namespace moa {
namespace {

struct DtypeEntry {
  const char* name;
  torch::ScalarType scalar;
  int64_t bytes;
};

constexpr DtypeEntry kDtypes[] = {
    {"F64", torch::kFloat64, 8},   {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},     {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeEntry* FindDtype(const std::string& name) {
  for (const DtypeEntry& e : kDtypes) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

const DtypeEntry* FindDtype(torch::ScalarType scalar) {
  for (const DtypeEntry& e : kDtypes) {
    if (scalar == e.scalar) return &e;
  }
  return nullptr;
}

}  // namespace

namespace {

// The file at `data`, every header field checked; the tensors are copied out only when asked for.
absl::StatusOr<SafetensorsFile> Parse(const char* data, size_t size, const std::string& origin,
                                      bool with_tensors) {
  auto bad = [&origin](const std::string& why) {
    return absl::DataLossError("safetensors file " + origin + ": " + why);
  };
  if (size < 8) return bad("shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(data[i]);
  if (header_len > size - 8) {
    return bad("header length " + std::to_string(header_len) + " runs past the end of the " +
               std::to_string(size) + "-byte file");
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data + 8, data + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    return bad(std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) return bad("header is not a JSON object");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;

  SafetensorsFile file;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return bad("__metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          return bad("__metadata__ value of " + m.key() + " is not a string");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return bad("tensor " + name + " lacks dtype, shape or data_offsets");
    }
    if (!entry["dtype"].is_string()) return bad("tensor " + name + ": dtype is not a string");
    const DtypeEntry* dtype = FindDtype(entry["dtype"].get<std::string>());
    if (dtype == nullptr) {
      return bad("tensor " + name + ": unknown dtype " + entry["dtype"].get<std::string>());
    }
    const nlohmann::json& shape_json = entry["shape"];
    const nlohmann::json& offsets = entry["data_offsets"];
    if (!shape_json.is_array()) return bad("tensor " + name + ": shape is not an array");
    std::vector<int64_t> shape;
    // The product of the non-zero sizes is bounded as well as the element count: an empty tensor
    // of shape [0, 2^40, 2^40] would overflow LibTorch's strides (it throws).
    uint64_t extent = 1;
    bool empty = false;
    for (const auto& d : shape_json) {
      if (!d.is_number_unsigned())
        return bad("tensor " + name + ": shape has a non-integer or negative entry");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t{1} << 40) || (dim != 0 && extent > (uint64_t{1} << 40) / dim)) {
        return bad("tensor " + name + ": implausibly large shape");
      }
      if (dim == 0) empty = true;
      if (dim != 0) extent *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    const uint64_t numel = empty ? 0 : extent;
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return bad("tensor " + name + ": data_offsets must be two non-negative integers");
    }
    const uint64_t begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return bad("tensor " + name + ": data_offsets [" + std::to_string(begin) + ", " +
                 std::to_string(end) + ") lie outside the " + std::to_string(data_size) +
                 "-byte data section");
    }
    if (end - begin != numel * static_cast<uint64_t>(dtype->bytes)) {
      return bad("tensor " + name + ": data_offsets span " + std::to_string(end - begin) +
                 " bytes but dtype and shape need " + std::to_string(numel * dtype->bytes));
    }
    ranges.emplace_back(begin, end);
    if (!with_tensors) continue;
    torch::Tensor tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype->scalar));
    if (end > begin) std::memcpy(tensor.data_ptr(), data + data_start + begin, end - begin);
    file.tensors[name] = tensor;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return bad("tensors have overlapping data_offsets");
  }
  return file;
}

absl::StatusOr<SafetensorsFile> Read(const std::string& path, bool with_tensors) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::NotFoundError("cannot open " + path + ": " + std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    ::close(fd);
    return absl::DataLossError("cannot stat " + path);
  }
  const size_t size = static_cast<size_t>(info.st_size);
  if (size == 0) {
    ::close(fd);
    return Parse(nullptr, 0, path, with_tensors);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED)
    return absl::DataLossError("cannot map " + path + ": " + std::strerror(errno));
  absl::StatusOr<SafetensorsFile> file =
      Parse(static_cast<const char*>(map), size, path, with_tensors);
  ::munmap(map, size);
  return file;
}

}  // namespace

absl::StatusOr<SafetensorsFile> ParseSafetensors(const std::string& bytes,
                                                 const std::string& origin) {
  return Parse(bytes.data(), bytes.size(), origin, /*with_tensors=*/true);
}

absl::StatusOr<SafetensorsFile> ParseSafetensors(const char* data, size_t size,
                                                 const std::string& origin) {
  return Parse(data, size, origin, /*with_tensors=*/true);
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  return Read(path, /*with_tensors=*/true);
}

absl::StatusOr<std::map<std::string, std::string>> ReadSafetensorsMetadata(
    const std::string& path) {
  MOA_ASSIGN_OR_RETURN(SafetensorsFile file, Read(path, /*with_tensors=*/false));
  return std::move(file.metadata);
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, torch::Tensor>> sorted = tensors;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string data;
  for (auto& [name, tensor] : sorted) {
    if (name == "__metadata__")
      return absl::InvalidArgumentError("tensor name __metadata__ is reserved");
    const DtypeEntry* dtype = FindDtype(tensor.scalar_type());
    if (dtype == nullptr) {
      return absl::InvalidArgumentError("safetensors " + path + ": unsupported dtype for " + name);
    }
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t begin = data.size();
    data.append(static_cast<const char*>(t.data_ptr()), t.numel() * dtype->bytes);
    header[name] = {{"dtype", dtype->name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {begin, static_cast<uint64_t>(data.size())}}};
  }
  std::string header_text = header.dump();
  while ((8 + header_text.size()) % 8 != 0) header_text.push_back(' ');
  std::string out(8, '\0');
  uint64_t len = header_text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  out += header_text;
  out += data;
  return WriteFileAtomically(path, out);
}

}  // namespace moa
