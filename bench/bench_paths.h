// Where a benchmark finds the repository (configurations, the PyTorch twins) and the Python whose
// torch runs the baselines: MOA_SOURCE_DIR and MOA_PYTHON from the environment where set (binaries
// carried to another machine, as scripts/gpu_check.sh runs them), else the paths of this build.
#pragma once

#include <cstdlib>
#include <string>

namespace moa::bench {

inline std::string SourceDir() {
  const char* env = std::getenv("MOA_SOURCE_DIR");
  return env != nullptr && *env != '\0' ? env : MOA_SOURCE_DIR;
}

inline std::string PythonPath() {
  const char* env = std::getenv("MOA_PYTHON");
  return env != nullptr && *env != '\0' ? env : MOA_PYTHON;
}

}  // namespace moa::bench
