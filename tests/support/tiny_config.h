// The tiny configuration (configs/tiny.ini) that trainer tests run, writing to `dir`, with
// `overrides` as --section.key=value would give them. MOA_TEST_DATA_DIR, when set, points it at
// IDX files elsewhere than Debian's Fashion-MNIST (scripts/gpu_check.sh generates them).
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "launch/options.h"
#include "tests/support/test_support.h"

namespace moa::test {

inline trainer::RunConfig TinyConfig(const std::string& dir,
                                     std::vector<std::string> overrides = {}) {
  overrides.push_back("output.dir=" + dir);
  if (const char* data = std::getenv("MOA_TEST_DATA_DIR")) {
    overrides.push_back(std::string("data.data_dir=") + data);
  }
  auto config = launch::LoadConfig(SourceDir() + "/configs/tiny.ini", overrides);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : trainer::RunConfig();
}

}  // namespace moa::test
