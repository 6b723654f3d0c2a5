// What the `moa sweep` tests share: the `moa` under test, the tiny configuration, and sweep
// arguments parsed with a test failure (not an abort) when they are refused.
#pragma once

#include <string>
#include <vector>

#include "launch/sweep.h"
#include "tests/support/test_support.h"

namespace moa::test {

inline std::string Moa() { return BinaryDir() + "/moa"; }
inline std::string Tiny() { return SourceDir() + "/configs/tiny.ini"; }

inline launch::SweepOptions Parse(const std::vector<std::string>& args) {
  auto options = launch::ParseSweepArgs(args);
  EXPECT_TRUE(options.ok()) << options.status();
  return options.ok() ? *options : launch::SweepOptions{};
}

}  // namespace moa::test
