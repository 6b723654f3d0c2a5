// File helpers: atomic writes (temporary name + rename, so a kill never leaves half a file),
// appends that survive crashes, whole-file reads with errors that name the path, and absolute
// paths.
#pragma once

#include <string>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace moa {

/// Writes `contents` to `path` via `path.tmp.<pid>`, fsync and rename(2), then syncs the folder.
/// On failure `path` keeps its previous contents and the error names it and the cause.
/// MOA_INJECT_WRITE_FAULT (common/write_faults.h) places test faults inside.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);

/// Appends one line (a newline is added) to `path`, rewriting the file atomically so readers
/// never see a partial line.
absl::Status AppendLineAtomically(const std::string& path, const std::string& line);

/// Reads a whole file; NotFoundError naming the path when it cannot be opened.
absl::StatusOr<std::string> ReadFile(const std::string& path);

/// Creates a directory and its parents; ok if it exists.
absl::Status MakeDirs(const std::string& path);

/// `path` made absolute from the current folder and normalised ("a/../b" -> "b"); "" stays "".
std::string AbsolutePath(const std::string& path);

}  // namespace moa
