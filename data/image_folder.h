// DomainBed's image-folder layout (root/<environment>/<class>/<image>, environments and classes
// the sorted folder names, images found as torchvision's ImageFolder finds them) and the checks a
// run makes before it starts: missing environment or class folders, empty classes, and images
// that do not decode, each named.
//
//   absl::StatusOr<FolderLayout> layout = ScanImageFolder(root, {"art_painting", ...}, 7);
//   CheckReport report = CheckImages(files, ImageCheck::kHeader, /*workers=*/4);
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace moa::data {

struct FolderEnvironment {
  std::string name;
  std::vector<std::string> files;  // full paths, in torchvision's order
  std::vector<int64_t> labels;     // class index per file
};

struct FolderLayout {
  std::string root;
  std::vector<std::string> classes;
  std::vector<FolderEnvironment> environments;
};

/// Scans `root`. With `expected_environments` non-empty, the environment folders must be exactly
/// those; with `expected_classes` > 0 there must be that many classes. Every environment must
/// have the same class folders and every class at least one image (by torchvision's extensions,
/// case-insensitive; other files are ignored). Errors name the folders at fault.
absl::StatusOr<FolderLayout> ScanImageFolder(const std::string& root,
                                             const std::vector<std::string>& expected_environments,
                                             int64_t expected_classes);

/// How much of each image a run verifies before it starts.
enum class ImageCheck { kNone, kHeader, kFull };
absl::StatusOr<ImageCheck> ParseImageCheck(const std::string& text);

struct CheckFailure {
  std::string path;
  std::string message;
};

struct CheckReport {
  int64_t checked = 0;
  std::vector<CheckFailure> failures;  // in file order
};

/// Reads every file's header (kHeader) or decodes it whole (kFull) on `workers` threads.
CheckReport CheckImages(const std::vector<std::string>& files, ImageCheck check, int workers);

/// "N of M images failed to decode: path: message; ..." listing at most `limit` files.
std::string DescribeFailures(const CheckReport& report, size_t limit = 20);

/// Runs fn(i) for i in [0, n) on `workers` threads (the caller's included); the first exception
/// is rethrown after all threads end.
void ParallelFor(int64_t n, int workers, const std::function<void(int64_t)>& fn);

}  // namespace moa::data
