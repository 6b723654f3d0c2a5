// What the whole-job tests (job_test.cc, failure_test.cc) share: mpirun with this project's
// options, the `moa` under test, the tiny MoA configuration with everything random switched on,
// a command run with its exit code, output and duration, and the live `moa` ranks of a run.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

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

// A `moa` process of this test's run (its command line names `marker`) and its rank.
struct RankProcess {
  pid_t pid;
  int rank;
};

inline std::string ReadProcFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The live `moa` processes whose command line contains `marker`, with the rank Open MPI gave
// them (its OMPI_COMM_WORLD_RANK), found through /proc.
inline std::vector<RankProcess> MoaProcesses(const std::string& marker) {
  std::vector<RankProcess> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = ReadProcFile(entry.path() / "cmdline");
    const std::string program = cmdline.substr(0, cmdline.find('\0'));
    if (program != Moa() || cmdline.find(marker) == std::string::npos) continue;
    if (ReadProcFile(entry.path() / "stat").find(") Z ") != std::string::npos) continue;
    const std::string environ = ReadProcFile(entry.path() / "environ");
    const std::string key = std::string("\0") + "OMPI_COMM_WORLD_RANK=";
    const size_t at = environ.find(key);
    const int rank = at == std::string::npos ? -1 : std::atoi(environ.c_str() + at + key.size());
    found.push_back({static_cast<pid_t>(std::stoi(name)), rank});
  }
  return found;
}

// Waits until `done()` holds or `seconds` pass; returns done().
inline bool WaitFor(const std::function<bool()>& done, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done();
}

}  // namespace moa::test
