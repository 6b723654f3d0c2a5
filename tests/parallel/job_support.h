// What the whole-job tests (job_test.cc, failure_test.cc) share: mpirun with this project's
// options, the `moa` under test, the tiny MoA configuration with everything random switched on,
// a command run with its exit code, output and duration, the live `moa` ranks of a run, and the
// comparison of two runs that must agree.
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

#include <nlohmann/json.hpp>

#include "common/safetensors.h"
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

// The tiny configuration with LoRA experts (the stacked computation), router noise, top-2, a
// capacity that drops assignments and the auxiliary loss.
inline std::string TinyLoraMoa(const std::string& dir) {
  return " train --config " + SourceDir() +
         "/configs/tiny.ini --adapter.method=moa --moa.top_k=2 --moa.noise=true "
         "--moa.aux_loss=true --moa.proj_dim=16 --moa.capacity_factor=0.8 "
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

// Two runs of the same configuration on the same global batches: equal records and adapters.
// Tolerance: losses and evaluation losses to 1e-4 relative (float sums in another order);
// accuracies (correct counts / totals) exactly; router assignment shares and drops exactly (when
// `routed`: the runs train MoA layers, whose records must carry them); the trained adapters and
// their Adam state to 1e-4 relative.
inline void ExpectSameRun(const std::string& one_dir, const std::string& many_dir,
                          bool routed = true) {
  const auto one = ReadJsonLines(one_dir + "/results.jsonl");
  const auto many = ReadJsonLines(many_dir + "/results.jsonl");
  ASSERT_EQ(one.size(), many.size());
  ASSERT_FALSE(one.empty());
  for (size_t i = 0; i < one.size(); ++i) {
    for (auto it = one[i].begin(); it != one[i].end(); ++it) {
      const std::string& key = it.key();
      if (key.find("_acc") != std::string::npos) {
        EXPECT_EQ(it.value().get<double>(), many[i][key].get<double>())
            << key << " at record " << i;
      } else if (key == "loss" || key.find("_loss") != std::string::npos) {
        const double a = it.value().get<double>(), b = many[i][key].get<double>();
        EXPECT_NEAR(a, b, 1e-4 * std::abs(a)) << key << " at record " << i;
      }
    }
    if (!routed) continue;
    ASSERT_TRUE(many[i].contains("router"));
    for (size_t l = 0; l < one[i]["router"].size(); ++l) {
      EXPECT_EQ(one[i]["router"][l]["share"], many[i]["router"][l]["share"]) << "layer " << l;
      EXPECT_EQ(one[i]["router"][l]["dropped"], many[i]["router"][l]["dropped"]);
    }
  }
  for (const char* file : {"/checkpoints/selected.safetensors", "/checkpoints/state.safetensors"}) {
    MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile a, ReadSafetensors(one_dir + file));
    MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile b, ReadSafetensors(many_dir + file));
    ASSERT_EQ(a.tensors.size(), b.tensors.size()) << file;
    for (const auto& [name, t] : a.tensors) {
      if (name.rfind("rng/", 0) == 0) continue;
      EXPECT_TRUE(torch::allclose(t, b.tensors.at(name), 1e-4, 1e-6))
          << file << " " << name << " max diff " << (t - b.tensors.at(name)).abs().max();
    }
  }
}

}  // namespace moa::test
