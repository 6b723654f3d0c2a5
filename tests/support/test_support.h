// Shared helpers for moa's GoogleTest executables: status assertions, temporary directories, and
// running the Python parity references (a missing Python side fails, it never skips:
// docs/architecture.md, Folders, tests/).
#pragma once

#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#define MOA_EXPECT_OK(expr)                                    \
  do {                                                         \
    const ::absl::Status moa_s_ = ::moa::test::AsStatus(expr); \
    EXPECT_TRUE(moa_s_.ok()) << moa_s_;                        \
  } while (0)

#define MOA_ASSERT_OK(expr)                                    \
  do {                                                         \
    const ::absl::Status moa_s_ = ::moa::test::AsStatus(expr); \
    ASSERT_TRUE(moa_s_.ok()) << moa_s_;                        \
  } while (0)

#define MOA_ASSERT_OK_AND_ASSIGN(lhs, expr)            \
  auto MOA_TEST_CONCAT(moa_so_, __LINE__) = (expr);    \
  ASSERT_TRUE(MOA_TEST_CONCAT(moa_so_, __LINE__).ok()) \
      << MOA_TEST_CONCAT(moa_so_, __LINE__).status();  \
  lhs = std::move(MOA_TEST_CONCAT(moa_so_, __LINE__)).value()

#define MOA_TEST_CONCAT_INNER(a, b) a##b
#define MOA_TEST_CONCAT(a, b) MOA_TEST_CONCAT_INNER(a, b)

namespace moa::test {

inline absl::Status AsStatus(const absl::Status& s) { return s; }
template <typename T>
absl::Status AsStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

/// A fresh directory under /tmp, removed with its contents when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// The repository root (MOA_SOURCE_DIR from ctest, else the compiled-in path).
std::string SourceDir();
/// The build directory, where the `moa` executable lives.
std::string BinaryDir();

/// The Python with torch, timm and safetensors: MOA_PYTHON, else the environment of
/// scripts/setup.sh that the build was configured with.
std::string PythonPath();

/// Runs `python tests/python/<script> <args>` and returns its exit status; its output goes to
/// `log_path` when given. Fails the test (not skips) if Python is missing.
int RunPython(const std::string& script, const std::string& args, const std::string& log_path = "");

/// Runs a shell command; returns its exit status and captures stdout+stderr into `output`.
int RunShell(const std::string& command, std::string* output);

/// The JSON objects of a JSON-lines file (a run's results.jsonl), one per line; empty when the
/// file is missing.
std::vector<nlohmann::json> ReadJsonLines(const std::string& path);

/// Expects run directory `run` to hold as many results.jsonl records as `reference`, each
/// record's training loss within `rtol` (relative) of the reference's.
void ExpectLossesNear(const std::string& run, const std::string& reference, double rtol);

}  // namespace moa::test
