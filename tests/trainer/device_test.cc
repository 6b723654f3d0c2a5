// Devices, precision and the fused optimizer on this machine's CPU: a GPU asked for where none is
// visible is a clear error; bf16 autocast trains and follows fp32; ATen's fused Adam/AdamW equals
// torch::optim's per-tensor update, and its skip flag leaves everything untouched.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/files.h"
#include "launch/options.h"
#include "parallel/device.h"
#include "tests/parallel/job_support.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_config.h"
#include "trainer/optimizer.h"
#include "trainer/state.h"
#include "trainer/trainer.h"

namespace moa::trainer {
namespace {

TEST(DeviceTest, CudaWithoutAGpuIsAnErrorNamingRankAndHost) {
  if (parallel::VisibleGpus() > 0) GTEST_SKIP() << "a GPU is visible here";
  test::TempDir dir;
  auto result = Train(test::TinyConfig(dir.File("run"), {"parallel.device=cuda"}));
  ASSERT_FALSE(result.ok());
  const std::string message(result.status().message());
  EXPECT_NE(message.find("parallel.device = cuda"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 0 on " + parallel::Hostname()), std::string::npos) << message;
  EXPECT_NE(message.find("sees no GPU"), std::string::npos) << message;
  EXPECT_FALSE(std::filesystem::exists(dir.File("run/results.jsonl")));
}

// The kernel policy is set both ways: a deterministic run followed by a plain one in the same
// process leaves the plain one free of deterministic kernels.
TEST(DeviceTest, KernelPolicyIsSetBothWays) {
  parallel::SetKernelPolicy(/*allow_tf32=*/false, /*deterministic=*/true);
  EXPECT_TRUE(at::globalContext().deterministicAlgorithms());
  EXPECT_TRUE(at::globalContext().deterministicCuDNN());
  parallel::SetKernelPolicy(/*allow_tf32=*/true, /*deterministic=*/false);
  EXPECT_FALSE(at::globalContext().deterministicAlgorithms());
  EXPECT_FALSE(at::globalContext().deterministicCuDNN());
  EXPECT_TRUE(at::globalContext().allowTF32CuDNN());
  EXPECT_FALSE(at::globalContext().allowTF32CuBLAS());
}

TEST(DeviceTest, AutoFallsBackToTheCpuAndEnvJsonSaysSo) {
  if (parallel::VisibleGpus() > 0) GTEST_SKIP() << "a GPU is visible here";
  test::TempDir dir;
  MOA_ASSERT_OK(Train(test::TinyConfig(dir.File("run"), {"train.steps=2"})));
  MOA_ASSERT_OK_AND_ASSIGN(std::string text, ReadFile(dir.File("run/env.json")));
  const nlohmann::json env = nlohmann::json::parse(text);
  EXPECT_EQ(env["device"], "cpu");
  EXPECT_EQ(env["precision"], "fp32");
  ASSERT_EQ(env["devices"].size(), 1u);
  EXPECT_EQ(env["devices"][0]["type"], "cpu");
  EXPECT_EQ(env["devices"][0]["host"], parallel::Hostname());
  EXPECT_GT(env["devices"][0]["memory_gb"].get<double>(), 0.5);
  // The LibTorch moa links is the torch that scripts/requirements.txt pins (not Debian's 1.13).
  MOA_ASSERT_OK_AND_ASSIGN(std::string pins,
                           ReadFile(test::SourceDir() + "/scripts/requirements.txt"));
  const size_t at = pins.find("\ntorch==");
  ASSERT_NE(at, std::string::npos) << "no torch pin in scripts/requirements.txt";
  const size_t from = at + std::string("\ntorch==").size();
  const std::string pinned = pins.substr(from, pins.find('\n', from) - from);
  EXPECT_EQ(env["libtorch"].get<std::string>().rfind(pinned, 0), 0u)
      << env["libtorch"] << " against the pinned " << pinned;
}

// 50 steps of the tiny configuration in bf16 autocast against fp32, at a learning rate at which
// it learns (1e-2: the loss falls from 2.32 to 1.84, the test domain's accuracy from 6 % to 21 %).
// bfloat16 keeps 8 bits of mantissa, so the interval losses drift apart as training moves: 0.1 %
// at step 49 on this project's machine, and the bound is ten times that; accuracies may differ
// by 3 images in 96. The runs must differ (bf16 actually used) and both must learn.
TEST(PrecisionTest, Bf16TrainingFollowsFp32) {
  test::TempDir dir;
  const std::vector<std::string> common = {"train.steps=50", "train.checkpoint_freq=10",
                                           "optim.lr=1e-2"};
  std::vector<std::string> bf16 = common;
  bf16.push_back("train.precision=bf16");
  MOA_ASSERT_OK(Train(test::TinyConfig(dir.File("fp32"), common)));
  MOA_ASSERT_OK(Train(test::TinyConfig(dir.File("bf16"), bf16)));
  const auto a = test::ReadJsonLines(dir.File("fp32/results.jsonl"));
  const auto b = test::ReadJsonLines(dir.File("bf16/results.jsonl"));
  ASSERT_EQ(a.size(), 6u);  // steps 0, 10, 20, 30, 40, 49
  ASSERT_EQ(b.size(), a.size());
  bool differs = false;
  for (size_t r = 0; r < a.size(); ++r) {
    const double fp32 = a[r]["loss"].get<double>(), low = b[r]["loss"].get<double>();
    EXPECT_NEAR(low, fp32, 0.01 * fp32) << "record " << r;
    differs = differs || low != fp32;
    EXPECT_NEAR(b[r]["env5_in_acc"].get<double>(), a[r]["env5_in_acc"].get<double>(), 3.01 / 96)
        << "record " << r;
  }
  EXPECT_TRUE(differs) << "bf16 gave fp32's losses bit for bit: autocast did not run";
  // Both learned: the loss fell by more than a tenth.
  EXPECT_LT(a.back()["loss"].get<double>(), 0.9 * a.front()["loss"].get<double>());
  EXPECT_LT(b.back()["loss"].get<double>(), 0.9 * b.front()["loss"].get<double>());
}

// The kernel's own view of the CPU (/proc/cpuinfo's flags), read independently of LibTorch's
// CPUID-based detection: the two agree on whether bfloat16 matrix instructions exist.
bool CpuinfoListsBf16MatrixUnits() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0 && line.rfind("Features", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string flag;
    while (words >> flag) {
      if (flag == "avx512_bf16" || flag == "amx_bf16" || flag == "bf16" || flag == "svebf16") {
        return true;
      }
    }
    return false;  // every processor lists the same flags; the first line decides
  }
  return false;
}

TEST(PrecisionTest, Bf16MatrixUnitsAsTheKernelReportsThem) {
  ASSERT_TRUE(std::filesystem::exists("/proc/cpuinfo"));
  EXPECT_EQ(parallel::CpuHasBf16MatrixUnits(), CpuinfoListsBf16MatrixUnits());
}

// bf16 on a CPU without bfloat16 matrix instructions runs (slowly) and says why it is slow; with
// fp32, or on a CPU that has them, no such warning.
TEST(PrecisionTest, Bf16OnACpuWithoutBf16UnitsIsWarnedAbout) {
  if (parallel::VisibleGpus() > 0) GTEST_SKIP() << "a GPU is visible here: auto would take it";
  test::TempDir dir;
  const std::string base = test::Moa() + " train --config " + test::SourceDir() +
                           "/configs/tiny.ini --train.steps=2 --output.dir=";
  const std::string warning = "on a CPU without bfloat16 matrix instructions";
  std::string out;
  ASSERT_EQ(test::RunShell(base + dir.File("bf16") + " --train.precision=bf16", &out), 0) << out;
  EXPECT_EQ(out.find(warning) != std::string::npos, !CpuinfoListsBf16MatrixUnits()) << out;
  ASSERT_EQ(test::RunShell(base + dir.File("fp32"), &out), 0) << out;
  EXPECT_EQ(out.find(warning), std::string::npos) << out;
}

// Parameters of several shapes with fixed gradients; `steps` updates by each path.
struct OptimizerRun {
  std::vector<torch::Tensor> params;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
};

// `lagging`: the third parameter gets a gradient in every third step only (an expert no token
// chose in the others), so the parameters' step counts differ.
OptimizerRun RunOptimizer(const std::string& kind, bool fused, int steps,
                          const std::vector<float>& skips = {}, bool lagging = false) {
  torch::manual_seed(11);
  OptimizerRun run;
  for (auto shape : std::vector<std::vector<int64_t>>{{7, 5}, {13}, {3, 4, 2}, {1}}) {
    run.params.push_back(torch::randn(shape).requires_grad_(true));
  }
  OptimConfig config;
  config.optimizer = kind;
  config.lr = 1e-2;
  config.weight_decay = 0.1;
  run.optimizer = MakeOptimizer(config, run.params);
  for (int s = 0; s < steps; ++s) {
    for (torch::Tensor& p : run.params) p.mutable_grad() = torch::randn(p.sizes());
    if (lagging && s % 3 != 0) run.params[2].mutable_grad() = torch::Tensor();
    const float skip = s < static_cast<int>(skips.size()) ? skips[s] : 0.0f;
    StepOptimizer(*run.optimizer, fused, torch::full({1}, skip));
  }
  return run;
}

void ExpectSameMoments(OptimizerRun& a, OptimizerRun& b, double rtol) {
  for (size_t i = 0; i < a.params.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a.params[i], b.params[i], rtol, 1e-7))
        << "parameter " << i << " differs by "
        << (a.params[i] - b.params[i]).abs().max().item<double>();
    auto& sa = a.optimizer->state().at(OptimizerStateKey(a.params[i]));
    auto& sb = b.optimizer->state().at(OptimizerStateKey(b.params[i]));
    auto* adam_a = dynamic_cast<torch::optim::AdamParamState*>(sa.get());
    auto* adam_b = dynamic_cast<torch::optim::AdamParamState*>(sb.get());
    auto* adamw_a = dynamic_cast<torch::optim::AdamWParamState*>(sa.get());
    auto* adamw_b = dynamic_cast<torch::optim::AdamWParamState*>(sb.get());
    ASSERT_TRUE((adam_a && adam_b) || (adamw_a && adamw_b));
    const torch::Tensor m_a = adam_a ? adam_a->exp_avg() : adamw_a->exp_avg();
    const torch::Tensor m_b = adam_b ? adam_b->exp_avg() : adamw_b->exp_avg();
    const torch::Tensor v_a = adam_a ? adam_a->exp_avg_sq() : adamw_a->exp_avg_sq();
    const torch::Tensor v_b = adam_b ? adam_b->exp_avg_sq() : adamw_b->exp_avg_sq();
    EXPECT_TRUE(torch::allclose(m_a, m_b, rtol, 1e-6))
        << "exp_avg " << i << " differs by " << (m_a - m_b).abs().max().item<double>()
        << " at most, of " << m_b.abs().max().item<double>();
    EXPECT_TRUE(torch::allclose(v_a, v_b, rtol, 1e-6)) << "exp_avg_sq " << i;
    EXPECT_EQ(adam_a ? adam_a->step() : adamw_a->step(), adam_b ? adam_b->step() : adamw_b->step());
  }
}

// float32 rounding differs between one fused kernel (lerp, fused multiply-adds) and a chain of
// tensor ops by a few ulps per step; after 20 steps values of order 1 agree to 1e-5 relative or
// 1e-6 absolute (an entry near zero keeps the absolute ulps of the larger terms it came from). A
// weight decay applied the AdamW way in Adam (or the other way round), a missing bias correction or
// one skipped tensor is off by 1e-3 or more.
TEST(FusedOptimizerTest, AdamEqualsThePerTensorUpdate) {
  OptimizerRun per_tensor = RunOptimizer("adam", false, 20);
  OptimizerRun fused = RunOptimizer("adam", true, 20);
  ExpectSameMoments(per_tensor, fused, 1e-5);
}

TEST(FusedOptimizerTest, AdamWEqualsThePerTensorUpdate) {
  OptimizerRun per_tensor = RunOptimizer("adamw", false, 20);
  OptimizerRun fused = RunOptimizer("adamw", true, 20);
  ExpectSameMoments(per_tensor, fused, 1e-5);
}

// Parameters at different step counts (the fused path shares one step tensor among those at the
// same count) each get their own bias correction, as in the per-tensor update.
TEST(FusedOptimizerTest, ParametersAtDifferentStepCountsKeepTheirOwn) {
  OptimizerRun per_tensor = RunOptimizer("adam", false, 20, {}, /*lagging=*/true);
  OptimizerRun fused = RunOptimizer("adam", true, 20, {}, /*lagging=*/true);
  ExpectSameMoments(per_tensor, fused, 1e-5);
  auto* lagging = dynamic_cast<torch::optim::AdamParamState*>(
      fused.optimizer->state().at(OptimizerStateKey(fused.params[2])).get());
  auto* every = dynamic_cast<torch::optim::AdamParamState*>(
      fused.optimizer->state().at(OptimizerStateKey(fused.params[0])).get());
  EXPECT_EQ(lagging->step(), 7);
  EXPECT_EQ(every->step(), 20);
}

// A skipped step leaves weights and both moments as they were, in both paths. (The fused path's
// host step count still advances: the flag stays on the device. No checkpoint keeps that count,
// since the run stops at the next read of the flag, before any checkpoint; see optimizer.h.)
TEST(FusedOptimizerTest, SkipFlagLeavesWeightsAndMomentsUntouched) {
  for (const bool fused : {true, false}) {
    SCOPED_TRACE(fused ? "fused" : "per-tensor");
    OptimizerRun two = RunOptimizer("adam", fused, 2);
    for (torch::Tensor& p : two.params) p.mutable_grad() = torch::full(p.sizes(), NAN);
    std::vector<torch::Tensor> before, m_before, v_before;
    for (const torch::Tensor& p : two.params) {
      before.push_back(p.detach().clone());
      auto* s = dynamic_cast<torch::optim::AdamParamState*>(
          two.optimizer->state().at(OptimizerStateKey(p)).get());
      m_before.push_back(s->exp_avg().clone());
      v_before.push_back(s->exp_avg_sq().clone());
    }
    StepOptimizer(*two.optimizer, fused, torch::ones({1}));
    for (size_t i = 0; i < two.params.size(); ++i) {
      EXPECT_TRUE(torch::equal(two.params[i], before[i])) << "parameter " << i;
      auto* s = dynamic_cast<torch::optim::AdamParamState*>(
          two.optimizer->state().at(OptimizerStateKey(two.params[i])).get());
      EXPECT_TRUE(torch::equal(s->exp_avg(), m_before[i])) << "exp_avg " << i;
      EXPECT_TRUE(torch::equal(s->exp_avg_sq(), v_before[i])) << "exp_avg_sq " << i;
    }
  }
}

// Whole runs: the fused and the per-tensor optimizer give the same losses and accuracies.
TEST(FusedOptimizerTest, TrainingRunsAgree) {
  test::TempDir dir;
  MOA_ASSERT_OK(Train(test::TinyConfig(dir.File("fused"), {"optim.fused=true"})));
  MOA_ASSERT_OK(Train(test::TinyConfig(dir.File("plain"), {"optim.fused=false"})));
  test::ExpectLossesNear(dir.File("fused"), dir.File("plain"), 1e-4);
  const auto a = test::ReadJsonLines(dir.File("fused/results.jsonl"));
  const auto b = test::ReadJsonLines(dir.File("plain/results.jsonl"));
  for (size_t r = 0; r < std::min(a.size(), b.size()); ++r) {
    EXPECT_EQ(a[r]["env5_in_acc"], b[r]["env5_in_acc"]) << "record " << r;
  }
}

}  // namespace
}  // namespace moa::trainer
