#include "common/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "common/status_macros.h"
#include "common/write_faults.h"

namespace moa {

namespace {

// A failed step of an atomic write: the temporary file is removed and `path` keeps its old
// contents, which the message says.
absl::Status WriteFailed(const std::string& path, const std::string& tmp, const std::string& what,
                         int error) {
  ::unlink(tmp.c_str());
  return absl::UnavailableError("cannot " + what + " " + path + " (through " + tmp +
                                "): " + std::strerror(error) + "; " + path +
                                " keeps its previous contents");
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  MOA_ASSIGN_OR_RETURN(const std::optional<WriteFault> fault, WriteFaultFor(path));
  const auto at = [&fault](WriteStage stage) { return fault && fault->stage == stage; };
  const auto kill_at = [&](WriteStage stage) {
    if (at(stage) && fault->kill) KillAtWriteFault(*fault);
  };
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    return absl::UnavailableError("cannot create " + tmp + ": " + std::strerror(errno));
  }
  kill_at(WriteStage::kCreated);
  const size_t fault_offset = at(WriteStage::kPayload)
                                  ? contents.size() * fault->payload_percent / 100
                                  : contents.size() + 1;
  size_t written = 0;
  while (written < contents.size()) {
    if (written == fault_offset) {
      if (fault->kill) KillAtWriteFault(*fault);
      ::close(fd);
      return WriteFailed(path, tmp, "write", ENOSPC);
    }
    const size_t end = std::min(fault_offset, contents.size());
    const ssize_t n = ::write(fd, contents.data() + written, end - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      return WriteFailed(path, tmp, "write", error);
    }
    written += static_cast<size_t>(n);
  }
  kill_at(WriteStage::kWritten);
  if (at(WriteStage::kWritten) || ::fsync(fd) != 0) {
    const int error = at(WriteStage::kWritten) ? ENOSPC : errno;
    ::close(fd);
    return WriteFailed(path, tmp, "sync", error);
  }
  kill_at(WriteStage::kSynced);
  if (::close(fd) != 0) return WriteFailed(path, tmp, "close", errno);
  kill_at(WriteStage::kClosed);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return WriteFailed(path, tmp, "rename", errno);
  kill_at(WriteStage::kRenamed);
  // The rename is durable once the folder's entry is on disk.
  std::string folder = std::filesystem::path(path).parent_path().string();
  if (folder.empty()) folder = ".";
  const int dir_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  kill_at(WriteStage::kDirSynced);
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
  // An ifstream opens a folder and reads it as an empty file.
  if (std::filesystem::is_directory(path)) {
    return absl::InvalidArgumentError(path + " is a folder, not a file");
  }
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

std::string AbsolutePath(const std::string& path) {
  return path.empty() ? path : std::filesystem::absolute(path).lexically_normal().string();
}

}  // namespace moa
