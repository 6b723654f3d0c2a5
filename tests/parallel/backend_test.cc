// Which backend carries a run's collectives, decided without any GPU: the rules of
// parallel.backend on the CPU, with GPUs shared by ranks, and with one GPU per rank.
#include <gtest/gtest.h>

#include "parallel/backend.h"
#include "tests/support/test_support.h"

namespace moa::parallel {
namespace {

MeshLayout Ranks(int64_t world, int64_t per_node) {
  MeshLayout mesh;
  mesh.world_size = world;
  mesh.local_size = per_node;
  return mesh;
}

TEST(BackendTest, AutoTakesNcclOnlyWithAGpuPerRank) {
  const torch::Device cpu(torch::kCPU), gpu(torch::kCUDA, 0);
  MOA_ASSERT_OK_AND_ASSIGN(Backend b, ResolveBackend("auto", cpu, Ranks(4, 4), 0));
  EXPECT_EQ(b, Backend::kMpi);
  // Two ranks see one GPU: they share it, and NCCL cannot.
  MOA_ASSERT_OK_AND_ASSIGN(b, ResolveBackend("auto", gpu, Ranks(2, 2), 1));
  EXPECT_EQ(b, Backend::kMpi);
  // One process needs no collective library.
  MOA_ASSERT_OK_AND_ASSIGN(b, ResolveBackend("auto", gpu, Ranks(1, 1), 8));
  EXPECT_EQ(b, Backend::kMpi);
  MOA_ASSERT_OK_AND_ASSIGN(b, ResolveBackend("auto", gpu, Ranks(16, 8), 8));
  EXPECT_EQ(b, NcclAvailable() ? Backend::kNccl : Backend::kMpi);
  MOA_ASSERT_OK_AND_ASSIGN(b, ResolveBackend("mpi", gpu, Ranks(16, 8), 8));
  EXPECT_EQ(b, Backend::kMpi);
}

TEST(BackendTest, NcclOnTheCpuOrAnUnknownNameIsAnError) {
  auto on_cpu = ResolveBackend("nccl", torch::Device(torch::kCPU), Ranks(2, 2), 0);
  ASSERT_FALSE(on_cpu.ok());
  EXPECT_NE(std::string(on_cpu.status().message()).find("parallel.backend = mpi"),
            std::string::npos)
      << on_cpu.status();
  auto unknown = ResolveBackend("gloo", torch::Device(torch::kCPU), Ranks(1, 1), 0);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(std::string(unknown.status().message()).find("gloo"), std::string::npos);
  // Each rank seeing only its own GPU (Slurm's --gpus-per-task=1): NCCL on request.
  if (NcclAvailable()) {
    MOA_ASSERT_OK_AND_ASSIGN(
        Backend b, ResolveBackend("nccl", torch::Device(torch::kCUDA, 0), Ranks(8, 8), 1));
    EXPECT_EQ(b, Backend::kNccl);
  }
}

}  // namespace
}  // namespace moa::parallel
