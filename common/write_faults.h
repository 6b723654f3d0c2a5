// Fault injection inside atomic file writes, for the tests that kill a checkpoint write half way
// or let it hit a full disk (README, When things go wrong):
//
//   MOA_INJECT_WRITE_FAULT=FILE:STAGE:NTH:ACTION
//
// On the NTH write (1-based, counted in this process) of a file named FILE, at STAGE, the process
// ends by SIGKILL (`kill`) or the write fails as on a full disk (`enospc`). STAGE is one of
// `created` (temporary file open, nothing written), `payloadP` (P % of the bytes written, P in
// 1..99), `written` (every byte written, before fsync), `synced`, `closed`, `renamed` (the file
// has its final name, the folder is not yet synced) and `dirsynced`. `enospc` applies to
// `payloadP` (the write fails) and `written` (the fsync fails).
#pragma once

#include <optional>
#include <string>

#include <absl/status/statusor.h>

namespace moa {

enum class WriteStage { kCreated, kPayload, kWritten, kSynced, kClosed, kRenamed, kDirSynced };

struct WriteFault {
  std::string file;  // the file name, without its folder
  WriteStage stage = WriteStage::kCreated;
  int payload_percent = 0;  // for kPayload
  int nth = 1;
  bool kill = true;  // false: ENOSPC
};

/// Parses MOA_INJECT_WRITE_FAULT's value; an error shows the expected form.
absl::StatusOr<WriteFault> ParseWriteFault(const std::string& spec);

/// The fault planned for this write of `path`, counting the write (none when the variable is unset
/// or names another file or write). A malformed variable is an error naming it.
absl::StatusOr<std::optional<WriteFault>> WriteFaultFor(const std::string& path);

/// Ends the process by SIGKILL after saying where on standard error.
[[noreturn]] void KillAtWriteFault(const WriteFault& fault);

}  // namespace moa
