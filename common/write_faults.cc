// MOA_INJECT_WRITE_FAULT: parsing, and counting the writes of the file it names.
#include "common/write_faults.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>

#include <absl/strings/numbers.h>
#include <absl/strings/str_split.h>

namespace moa {
namespace {

constexpr char kVariable[] = "MOA_INJECT_WRITE_FAULT";

const std::map<std::string, WriteStage>& StagesByName() {
  static const auto* stages = new std::map<std::string, WriteStage>{
      {"created", WriteStage::kCreated}, {"written", WriteStage::kWritten},
      {"synced", WriteStage::kSynced},   {"closed", WriteStage::kClosed},
      {"renamed", WriteStage::kRenamed}, {"dirsynced", WriteStage::kDirSynced}};
  return *stages;
}

absl::Status Malformed(const std::string& spec, const std::string& why) {
  return absl::InvalidArgumentError(
      std::string(kVariable) + "='" + spec + "': " + why +
      "; expected FILE:STAGE:NTH:kill|enospc with STAGE one of created, payload1..payload99, "
      "written, synced, closed, renamed, dirsynced (enospc only at payloadP and written)");
}

}  // namespace

absl::StatusOr<WriteFault> ParseWriteFault(const std::string& spec) {
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  if (parts.size() != 4) return Malformed(spec, "four fields needed");
  WriteFault fault;
  fault.file = parts[0];
  if (fault.file.empty() || fault.file.find('/') != std::string::npos) {
    return Malformed(spec, "FILE is a file name without a folder");
  }
  const std::string& stage = parts[1];
  if (stage.rfind("payload", 0) == 0) {
    fault.stage = WriteStage::kPayload;
    if (!absl::SimpleAtoi(stage.substr(7), &fault.payload_percent) || fault.payload_percent < 1 ||
        fault.payload_percent > 99) {
      return Malformed(spec, "payload needs a percentage from 1 to 99");
    }
  } else {
    const auto found = StagesByName().find(stage);
    if (found == StagesByName().end()) return Malformed(spec, "unknown stage '" + stage + "'");
    fault.stage = found->second;
  }
  if (!absl::SimpleAtoi(parts[2], &fault.nth) || fault.nth < 1) {
    return Malformed(spec, "NTH is a count from 1");
  }
  if (parts[3] == "kill") {
    fault.kill = true;
  } else if (parts[3] == "enospc") {
    fault.kill = false;
    if (fault.stage != WriteStage::kPayload && fault.stage != WriteStage::kWritten) {
      return Malformed(spec, "enospc happens while writing or syncing");
    }
  } else {
    return Malformed(spec, "unknown action '" + parts[3] + "'");
  }
  return fault;
}

absl::StatusOr<std::optional<WriteFault>> WriteFaultFor(const std::string& path) {
  const char* spec = std::getenv(kVariable);
  if (spec == nullptr || *spec == '\0') return std::nullopt;
  static std::mutex mutex;
  static auto* writes_by_spec = new std::map<std::string, int>;  // a test may change the spec
  auto fault = ParseWriteFault(spec);
  if (!fault.ok()) return fault.status();
  if (std::filesystem::path(path).filename() != fault->file) return std::nullopt;
  std::lock_guard<std::mutex> lock(mutex);
  if (++(*writes_by_spec)[spec] != fault->nth) return std::nullopt;
  return *fault;
}

void KillAtWriteFault(const WriteFault& fault) {
  const std::string said =
      std::string(kVariable) + ": SIGKILL inside the write of " + fault.file + "\n";
  [[maybe_unused]] const ssize_t ignored = ::write(STDERR_FILENO, said.data(), said.size());
  ::raise(SIGKILL);
  std::abort();  // not reached: SIGKILL cannot be caught
}

}  // namespace moa
