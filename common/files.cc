#include "common/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace moa {

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    return absl::UnavailableError("cannot create " + tmp + ": " + std::strerror(errno));
  }
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::UnavailableError("cannot write " + tmp + ": " + why);
    }
    written += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return absl::UnavailableError("cannot rename " + tmp + " to " + path + ": " + why);
  }
  return absl::OkStatus();
}

absl::Status AppendLineAtomically(const std::string& path, const std::string& line) {
  std::string contents;
  if (std::filesystem::exists(path)) {
    auto existing = ReadFile(path);
    if (!existing.ok()) return existing.status();
    contents = std::move(existing).value();
  }
  contents += line;
  contents += '\n';
  return WriteFileAtomically(path, contents);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError("cannot read " + path);
  return buffer.str();
}

absl::Status MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::UnavailableError("cannot create directory " + path + ": " + ec.message());
  return absl::OkStatus();
}

}  // namespace moa
