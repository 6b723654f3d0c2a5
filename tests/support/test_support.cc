#include "tests/support/test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace moa::test {

TempDir::TempDir() {
  std::string pattern = "/tmp/moa_test_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string SourceDir() {
  const char* env = std::getenv("MOA_SOURCE_DIR");
  return env ? env : MOA_SOURCE_DIR_DEFAULT;
}

std::string BinaryDir() {
  const char* env = std::getenv("MOA_BINARY_DIR");
  return env ? env : MOA_BINARY_DIR_DEFAULT;
}

std::string PythonPath() {
  if (const char* env = std::getenv("MOA_PYTHON")) return env;
  return MOA_PYTHON_DEFAULT;
}

int RunShell(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    output->append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int RunPython(const std::string& script, const std::string& args, const std::string& log_path) {
  const std::string python = PythonPath();
  EXPECT_TRUE(std::filesystem::exists(python))
      << "the parity reference needs " << python << "; run scripts/setup.sh";
  std::string output;
  const int rc =
      RunShell(python + " " + SourceDir() + "/tests/python/" + script + " " + args, &output);
  if (!log_path.empty()) {
    FILE* f = std::fopen(log_path.c_str(), "w");
    if (f) {
      std::fwrite(output.data(), 1, output.size(), f);
      std::fclose(f);
    }
  }
  if (rc != 0) ADD_FAILURE() << "python " << script << " failed (" << rc << "):\n" << output;
  return rc;
}

std::vector<nlohmann::json> ReadJsonLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> records;
  std::string line;
  while (std::getline(in, line)) records.push_back(nlohmann::json::parse(line));
  return records;
}

void ExpectLossesNear(const std::string& run, const std::string& reference, double rtol) {
  const auto got = ReadJsonLines(run + "/results.jsonl");
  const auto want = ReadJsonLines(reference + "/results.jsonl");
  // Two runs that wrote nothing are not two runs that agree.
  ASSERT_FALSE(want.empty()) << reference << "/results.jsonl has no records";
  ASSERT_EQ(got.size(), want.size()) << run << " against " << reference;
  for (size_t r = 0; r < want.size(); ++r) {
    const double expected = want[r]["loss"].get<double>();
    EXPECT_NEAR(got[r]["loss"].get<double>(), expected, rtol * expected)
        << run << " against " << reference << ", record " << r;
  }
}

}  // namespace moa::test
