// What the whole-job tests (job_test.cc, failure_test.cc) share: mpirun with this project's
// options, the `moa` under test, the tiny MoA configuration with everything random switched on,
// and a command run with its exit code, output and duration.
#pragma once

#include <chrono>
#include <string>

#include "tests/support/test_support.h"

namespace moa::test {

// mpirun with this project's options, before the ranks' program(s).
inline std::string MpirunOptions() {
  return "timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none "
         "--mca btl_vader_single_copy_mechanism none ";
}

inline std::string Mpirun(int np) { return MpirunOptions() + "-np " + std::to_string(np) + " "; }

inline std::string Moa() { return BinaryDir() + "/moa"; }

// The tiny configuration with everything random switched on.
inline std::string TinyMoa(const std::string& dir) {
  return " train --config " + SourceDir() +
         "/configs/tiny.ini --adapter.method=moa --moa.expert=kronecker --moa.phm_dim=8 "
         "--moa.top_k=2 --moa.noise=true --moa.kron_dropout=0.5 --moa.aux_loss=true "
         "--moa.proj_dim=16 "
         "--train.check_replicas=true --train.threads=1 --output.dir=" +
         dir;
}

struct Ended {
  int code;
  double seconds;
  std::string output;
};

inline Ended RunTimed(const std::string& command) {
  const auto start = std::chrono::steady_clock::now();
  Ended e;
  e.code = RunShell(command, &e.output);
  e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return e;
}

}  // namespace moa::test
