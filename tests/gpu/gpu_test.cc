// Tests that need a GPU (ctest label `gpu`; each reports itself skipped where none is visible):
// NCCL passes the Communicator conformance suite at one rank, on device tensors and on host
// tensors it stages; one-GPU fp32 training (TF32 off) equals CPU training of the tiny
// configuration; bf16 follows fp32 on the GPU; deterministic GPU runs repeat exactly and resume
// exactly; a CPU checkpoint resumes on the GPU and a GPU checkpoint on the CPU; the expert
// planner measures the GPU; Kronecker dropout draws its keyed mask on the GPU, and a Kronecker-MoA
// run with dropout resumes exactly there.
// scripts/gpu_check.sh runs them on the GPU machine, with the multi-rank runs through the MPI
// backend.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/files.h"
#include "common/status_macros.h"
#include "launch/options.h"
#include "moa/expert_planner.h"
#include "moa/kronecker.h"
#include "parallel/backend.h"
#include "parallel/device.h"
#include "tests/parallel/conformance.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_config.h"
#include "trainer/trainer.h"

namespace moa {
namespace {

// Skipped without a GPU, unless MOA_EXPECT_GPU=1 (scripts/gpu_check.sh on the GPU machine), where
// a GPU that CUDA cannot see fails every test instead of letting them pass as skipped.
#define MOA_REQUIRE_GPU()                                                                         \
  if (parallel::VisibleGpus() == 0) {                                                             \
    if (const char* expect = std::getenv("MOA_EXPECT_GPU"); expect && std::string(expect) == "1") \
      FAIL() << "MOA_EXPECT_GPU=1, but CUDA sees no GPU";                                         \
    GTEST_SKIP() << "no GPU visible";                                                             \
  }

// Forwards every collective with the tensors moved to `device` and the results moved back, so
// the host-tensor conformance suite exercises a communicator's device path.
class OnDevice : public parallel::Communicator {
 public:
  OnDevice(parallel::Communicator& inner, torch::Device device) : inner_(inner), device_(device) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string backend_name() const override { return inner_.backend_name(); }
  absl::Status AllReduce(torch::Tensor& tensor, parallel::ReduceOp op) override {
    torch::Tensor d = tensor.to(device_);
    MOA_RETURN_IF_ERROR(inner_.AllReduce(d, op));
    tensor.copy_(d);
    return absl::OkStatus();
  }
  // Deferred: the device copy is reduced on the group's stream and copied back only after
  // WaitForDeferred has made the compute stream wait for it.
  absl::Status AllReduceDeferred(torch::Tensor& tensor, parallel::ReduceOp op) override {
    torch::Tensor d = tensor.to(device_);
    MOA_RETURN_IF_ERROR(inner_.AllReduceDeferred(d, op));
    deferred_.emplace_back(tensor, d);
    return absl::OkStatus();
  }
  absl::Status WaitForDeferred() override {
    MOA_RETURN_IF_ERROR(inner_.WaitForDeferred());
    for (auto& [host, d] : deferred_) host.copy_(d);
    deferred_.clear();
    return absl::OkStatus();
  }
  absl::StatusOr<torch::Tensor> AllGather(const torch::Tensor& tensor) override {
    MOA_ASSIGN_OR_RETURN(torch::Tensor d, inner_.AllGather(tensor.to(device_)));
    EXPECT_TRUE(d.is_cuda());
    return d.cpu();
  }
  absl::Status Broadcast(torch::Tensor& tensor, int root) override {
    torch::Tensor d = tensor.to(device_);
    MOA_RETURN_IF_ERROR(inner_.Broadcast(d, root));
    tensor.copy_(d);
    return absl::OkStatus();
  }
  absl::StatusOr<torch::Tensor> AllToAllV(const torch::Tensor& input,
                                          const std::vector<int64_t>& send_rows,
                                          std::vector<int64_t>* recv_rows) override {
    MOA_ASSIGN_OR_RETURN(torch::Tensor d,
                         inner_.AllToAllV(input.to(device_), send_rows, recv_rows));
    EXPECT_TRUE(d.is_cuda());
    return d.cpu();
  }
  absl::Status Barrier() override { return inner_.Barrier(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    return inner_.Split(color, key);
  }

 private:
  parallel::Communicator& inner_;
  torch::Device device_;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> deferred_;  // (caller's, device copy)
};

TEST(NcclTest, ConformanceAtOneRankOnDeviceAndHostTensors) {
  MOA_REQUIRE_GPU();
  auto self = parallel::MakeSelfCommunicator();
  const torch::Device gpu(torch::kCUDA, 0);
  MOA_ASSERT_OK_AND_ASSIGN(auto nccl, parallel::MakeNcclWorld(*self, gpu));
  EXPECT_EQ(nccl->backend_name(), "nccl");
  OnDevice device_tensors(*nccl, gpu);
  parallel::test::RunConformance(device_tensors);
  parallel::test::RunConformance(*nccl);  // host tensors, staged through the device
}

std::vector<nlohmann::json> Records(const std::string& run) {
  return test::ReadJsonLines(run + "/results.jsonl");
}

// fp32 with TF32 off: the GPU's kernels sum in other orders than the CPU's, so losses agree to
// float rounding amplified over 12 steps (1e-4 relative) and accuracies to one image in 96 of a
// split. A model or batch left on the CPU, or TF32 left on, shows up as larger differences.
TEST(GpuTrainingTest, Fp32OnTheGpuEqualsTheCpu) {
  MOA_REQUIRE_GPU();
  test::TempDir dir;
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("cpu"), {"parallel.device=cpu"})));
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("gpu"), {"parallel.device=cuda"})));
  test::ExpectLossesNear(dir.File("gpu"), dir.File("cpu"), 1e-4);
  const auto cpu = Records(dir.File("cpu")), gpu = Records(dir.File("gpu"));
  for (size_t r = 0; r < std::min(cpu.size(), gpu.size()); ++r) {
    for (int e = 0; e < 6; ++e) {
      const std::string key = "env" + std::to_string(e) + "_in_acc";
      EXPECT_NEAR(gpu[r][key].get<double>(), cpu[r][key].get<double>(), 1.01 / 96) << key;
    }
  }
  MOA_ASSERT_OK_AND_ASSIGN(std::string env, ReadFile(dir.File("gpu/env.json")));
  const nlohmann::json parsed = nlohmann::json::parse(env);
  EXPECT_EQ(parsed["device"], "cuda");
  EXPECT_FALSE(parsed["devices"][0]["name"].get<std::string>().empty());
  EXPECT_FALSE(parsed["devices"][0]["driver"].is_null());
}

// The same for LoRA-MoA, with a looser loss bound: top-1 routing is discontinuous, so a token
// whose two best experts' scores lie within float rounding of each other can take another expert
// on the GPU, and that token's update differs by a whole expert's output (10x the LoRA bound
// allows a few such tokens in 12 steps; a router or expert left on the CPU, or bf16, is further
// off). Accuracies to one image in 96, as above.
TEST(GpuTrainingTest, MoaFp32OnTheGpuEqualsTheCpu) {
  MOA_REQUIRE_GPU();
  test::TempDir dir;
  const std::vector<std::string> moa = {"adapter.method=moa", "moa.proj_dim=16", "moa.ranks=1,2,4",
                                        "moa.aux_loss=true"};
  auto with = [&](std::string device) {
    std::vector<std::string> o = moa;
    o.push_back("parallel.device=" + device);
    return o;
  };
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("cpu"), with("cpu"))));
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("gpu"), with("cuda"))));
  test::ExpectLossesNear(dir.File("gpu"), dir.File("cpu"), 1e-3);
  const auto cpu = Records(dir.File("cpu")), gpu = Records(dir.File("gpu"));
  for (size_t r = 0; r < std::min(cpu.size(), gpu.size()); ++r) {
    for (int e = 0; e < 6; ++e) {
      const std::string key = "env" + std::to_string(e) + "_in_acc";
      EXPECT_NEAR(gpu[r][key].get<double>(), cpu[r][key].get<double>(), 1.01 / 96) << key;
    }
  }
}

// 50 steps at a learning rate at which the tiny model learns (1e-2: on the CPU, with
// scripts/synthetic_idx.py's rings, fp32's loss falls from 2.31 to 1.90 and bf16 stays within 1 %
// of it): bf16 follows fp32 within 5 % per interval (bfloat16 keeps 8 bits of mantissa), differs
// from it (autocast ran), and both learn (the loss falls by more than a tenth).
TEST(GpuTrainingTest, Bf16FollowsFp32OnTheGpu) {
  MOA_REQUIRE_GPU();
  test::TempDir dir;
  const std::vector<std::string> common = {"parallel.device=cuda", "train.steps=50",
                                           "train.checkpoint_freq=10", "optim.lr=1e-2"};
  std::vector<std::string> bf16 = common;
  bf16.push_back("train.precision=bf16");
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("fp32"), common)));
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("bf16"), bf16)));
  test::ExpectLossesNear(dir.File("bf16"), dir.File("fp32"), 0.05);
  const auto a = Records(dir.File("fp32")), b = Records(dir.File("bf16"));
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GE(a.size(), 2u);
  bool differs = false;
  for (size_t r = 0; r < a.size(); ++r) differs = differs || a[r]["loss"] != b[r]["loss"];
  EXPECT_TRUE(differs) << "bf16 gave fp32's losses bit for bit: autocast did not run";
  EXPECT_LT(a.back()["loss"].get<double>(), 0.9 * a.front()["loss"].get<double>());
  EXPECT_LT(b.back()["loss"].get<double>(), 0.9 * b.front()["loss"].get<double>());
}

// Trains `options` into `run` for 6 steps, then resumes it to the configuration's last step.
void TrainStoppedAndResumed(const std::string& run, const std::vector<std::string>& options) {
  std::vector<std::string> first = options;
  first.push_back("train.steps=6");
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(run, first)));
  std::vector<std::string> rest = options;
  rest.push_back("train.resume=" + run);
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(run, rest)));
}

TEST(GpuTrainingTest, DeterministicRunsRepeatAndResumeExactly) {
  MOA_REQUIRE_GPU();
  test::TempDir dir;
  const std::vector<std::string> det = {"parallel.device=cuda", "train.deterministic=true",
                                        "adapter.method=moa", "moa.proj_dim=16"};
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("a"), det)));
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("b"), det)));
  ASSERT_NO_FATAL_FAILURE(TrainStoppedAndResumed(dir.File("c"), det));
  const auto a = Records(dir.File("a")), b = Records(dir.File("b")), c = Records(dir.File("c"));
  ASSERT_EQ(a.size(), b.size());
  ASSERT_EQ(a.size(), c.size());
  for (size_t r = 0; r < a.size(); ++r) {
    EXPECT_EQ(a[r]["loss"].dump(), b[r]["loss"].dump()) << "record " << r;
    EXPECT_EQ(a[r]["env5_in_acc"].dump(), b[r]["env5_in_acc"].dump()) << "record " << r;
  }
  // The resumed run: its training losses as the Kronecker test below allows (summed on the device
  // in another grouping after the resume), and every split's accuracy and loss, which come from
  // the weights alone: a resume that lost Adam's moments or the router's noise stream moves the
  // evaluation losses by far more than 1e-6.
  test::ExpectLossesNear(dir.File("c"), dir.File("a"), 1e-5);
  for (size_t r = 0; r < a.size(); ++r) {
    for (auto it = a[r].begin(); it != a[r].end(); ++it) {
      const std::string& key = it.key();
      if (key.rfind("env", 0) != 0) continue;
      if (key.size() > 4 && key.compare(key.size() - 4, 4, "_acc") == 0) {
        EXPECT_EQ(it.value().dump(), c[r][key].dump()) << "resumed, record " << r << " " << key;
      } else if (key.size() > 5 && key.compare(key.size() - 5, 5, "_loss") == 0) {
        const double want = it.value().get<double>();
        EXPECT_NEAR(c[r][key].get<double>(), want, 1e-6 * want)
            << "resumed, record " << r << " " << key;
      }
    }
  }
}

// Kronecker dropout on a GPU draws its mask there (Philox, keyed): one key gives one mask, another
// key another; about 1 - p of H's entries are kept, each scaled by 1 / (1 - p).
TEST(GpuTrainingTest, KroneckerDropoutMaskIsDrawnOnTheGpuByKey) {
  MOA_REQUIRE_GPU();
  torch::manual_seed(7);
  const torch::Device gpu(torch::kCUDA, 0);
  auto rules = std::make_shared<KroneckerRulesImpl>(8, false);
  KroneckerImpl k(KroneckerOptions(64, 192, 2).dropout(0.5), rules);
  rules->to(gpu);
  k.to(gpu);
  const torch::Tensor clean = k.UpdateMatrix(false, 123);
  const torch::Tensor a = k.UpdateMatrix(true, 123);
  ASSERT_TRUE(a.is_cuda());
  EXPECT_TRUE(torch::equal(a, k.UpdateMatrix(true, 123)));
  EXPECT_FALSE(torch::equal(a, k.UpdateMatrix(true, 124)));
  const torch::Tensor kept = a.ne(0);
  // 12288 entries: one standard deviation of the kept fraction is 0.0045.
  EXPECT_NEAR(kept.to(torch::kFloat64).mean().item<double>(), 0.5, 0.03);
  EXPECT_TRUE(torch::allclose(a.masked_select(kept), 2 * clean.masked_select(kept)));
}

// The mask's key is (seed, step, layer, expert): a Kronecker-MoA run with dropout on the GPU,
// stopped after 6 steps and resumed, ends as the uninterrupted run.
TEST(GpuTrainingTest, KroneckerMoaWithDropoutResumesExactlyOnTheGpu) {
  MOA_REQUIRE_GPU();
  test::TempDir dir;
  const std::vector<std::string> kron = {"parallel.device=cuda", "train.deterministic=true",
                                         "adapter.method=moa",   "moa.expert=kronecker",
                                         "moa.phm_dim=4",        "moa.kron_dropout=0.5",
                                         "moa.proj_dim=16"};
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("whole"), kron)));
  ASSERT_NO_FATAL_FAILURE(TrainStoppedAndResumed(dir.File("resumed"), kron));
  // Interval losses are summed on the device in another grouping after the resume: 1e-5 is far
  // below what one different mask of p = 0.5 moves.
  test::ExpectLossesNear(dir.File("resumed"), dir.File("whole"), 1e-5);
  const auto a = Records(dir.File("whole")), b = Records(dir.File("resumed"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t r = 0; r < a.size(); ++r) {
    EXPECT_EQ(a[r]["env5_in_acc"].dump(), b[r]["env5_in_acc"].dump()) << "record " << r;
  }
}

// The expert planner (parallel.expert_mode = auto) times the device the run trains on: on a GPU
// its matrix-product and Adam rates are the GPU's, far above the CPU's (an H200 does tens of
// TFLOP/s in fp32, the check's four CPU threads well under one).
TEST(GpuTrainingTest, ExpertPlannerMeasuresTheGpu) {
  MOA_REQUIRE_GPU();
  auto self = parallel::MakeSelfCommunicator();
  const MachineRates cpu = MeasureMachineRates(*self, /*links=*/false, torch::kCPU);
  const MachineRates gpu =
      MeasureMachineRates(*self, /*links=*/false, torch::Device(torch::kCUDA, 0));
  // Training's default update (optim.fused): ATen's fused Adam on the GPU.
  const MachineRates fused =
      MeasureMachineRates(*self, /*links=*/false, torch::Device(torch::kCUDA, 0), false, true);
  std::printf(
      "planner rates: matrix product %.3g FLOP/s on the GPU, %.3g on the CPU; Adam %.3g "
      "(fused %.3g) vs %.3g s per parameter\n",
      gpu.flops_per_s, cpu.flops_per_s, gpu.update_s_per_parameter, fused.update_s_per_parameter,
      cpu.update_s_per_parameter);
  EXPECT_GT(gpu.flops_per_s, 5 * cpu.flops_per_s);
  EXPECT_LT(gpu.update_s_per_parameter, cpu.update_s_per_parameter);
  EXPECT_GT(fused.update_s_per_parameter, 0);
  EXPECT_LT(fused.update_s_per_parameter, cpu.update_s_per_parameter);
}

// The allocator's peak, as the benchmarks read it: with or without a device index (the current
// GPU), reset to what is held now and raised by a new 256 MiB tensor.
TEST(GpuDeviceTest, PeakMemoryIsTheAllocatorsPeak) {
  MOA_REQUIRE_GPU();
  for (const torch::Device& device :
       {torch::Device(torch::kCUDA), torch::Device(torch::kCUDA, 0)}) {
    const int64_t bytes = int64_t{256} << 20;
    parallel::ResetPeakMemory(device);
    const int64_t before = parallel::PeakMemoryBytes(device);
    {
      const torch::Tensor block = torch::empty({bytes}, torch::dtype(torch::kUInt8).device(device));
      torch::cuda::synchronize();
    }
    EXPECT_GE(parallel::PeakMemoryBytes(device), before + bytes) << device;
    parallel::ResetPeakMemory(device);
    EXPECT_LT(parallel::PeakMemoryBytes(device), before + bytes) << device;
  }
}

// A checkpoint is device-free: saved on the CPU it resumes on the GPU, and back.
TEST(GpuTrainingTest, CheckpointsMoveBetweenCpuAndGpu) {
  MOA_REQUIRE_GPU();
  test::TempDir dir;
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(dir.File("whole"), {"parallel.device=cpu"})));
  MOA_ASSERT_OK(trainer::Train(
      test::TinyConfig(dir.File("cpu_gpu"), {"parallel.device=cpu", "train.steps=6"})));
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(
      dir.File("cpu_gpu"), {"parallel.device=cuda", "train.resume=" + dir.File("cpu_gpu")})));
  MOA_ASSERT_OK(trainer::Train(
      test::TinyConfig(dir.File("gpu_cpu"), {"parallel.device=cuda", "train.steps=6"})));
  MOA_ASSERT_OK(trainer::Train(test::TinyConfig(
      dir.File("gpu_cpu"), {"parallel.device=cpu", "train.resume=" + dir.File("gpu_cpu")})));
  for (const char* run : {"cpu_gpu", "gpu_cpu"}) {
    test::ExpectLossesNear(dir.File(run), dir.File("whole"), 1e-4);
  }
}

}  // namespace
}  // namespace moa
