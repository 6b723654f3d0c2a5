// Tests that run under mpirun (-np 2 and -np 4 in ctest): the conformance suite on the MPI
// communicator, the mesh's sub-groups, data-parallel gradient synchronisation, and the
// differentiable all-reduce.
#include <gtest/gtest.h>

#include "parallel/autograd_collectives.h"
#include "parallel/grad_sync.h"
#include "parallel/mesh.h"
#include "parallel/mpi_communicator.h"
#include "tests/parallel/conformance.h"
#include "tests/support/test_support.h"

namespace moa::parallel {
namespace {

TEST(MpiCommunicatorTest, Conformance) {
  auto world = MakeWorldCommunicator();
  ASSERT_EQ(world->backend_name(), "mpi") << "run this binary under mpirun";
  test::RunConformance(*world);
}

TEST(GradientSynchronizerTest, AveragesAndFillsMissingGradientsWithZeros) {
  auto world = MakeWorldCommunicator();
  const int r = world->rank(), n = world->size();
  auto group = world->Split(0, r);
  ASSERT_TRUE(group.ok());
  std::vector<torch::Tensor> params;
  for (int i = 0; i < 5; ++i) params.push_back(torch::zeros({7 + i}, torch::requires_grad()));
  // A tiny bucket size makes every parameter its own bucket.
  GradientSynchronizer sync(**group, params, /*bucket_bytes=*/16);
  EXPECT_EQ(sync.num_buckets(), 5);
  for (int step = 0; step < 3; ++step) {
    // Parameter 2 gets a gradient on rank 0 only (an expert chosen by no token elsewhere).
    torch::Tensor loss = torch::zeros({});
    for (int i = 0; i < 5; ++i) {
      if (i == 2 && r != 0) continue;
      loss = loss + (params[i] * static_cast<float>((r + 1) * (i + 1) + step)).sum();
    }
    for (auto& p : params) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    loss.backward();
    MOA_ASSERT_OK(sync.Finish());
    for (int i = 0; i < 5; ++i) {
      // Mean over ranks of (r + 1)(i + 1) + step, with zeros from ranks that had no gradient.
      double expected = 0;
      for (int j = 0; j < n; ++j) {
        if (i == 2 && j != 0) continue;
        expected += (j + 1) * (i + 1) + step;
      }
      expected /= n;
      EXPECT_TRUE(
          torch::allclose(params[i].grad(), torch::full({7 + i}, static_cast<float>(expected))))
          << "param " << i << " step " << step;
    }
  }
}

// Every dp x ep factorisation of the world: each sub-group has the ranks the layout's rank order
// (rank = dp_rank * ep + ep_rank) puts in it, in that order, and its collectives stay inside it.
TEST(MeshTest, SubGroupsFollowTheRankOrder) {
  auto world = MakeWorldCommunicator();
  const int n = world->size();
  for (int ep = 1; ep <= n; ++ep) {
    if (n % ep != 0) continue;
    SCOPED_TRACE("ep " + std::to_string(ep));
    MeshLayout layout;
    layout.world_size = n;
    layout.rank = world->rank();
    layout.ep = ep;
    layout.dp = n / ep;
    MOA_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Mesh> mesh,
                             Mesh::Create(layout, *world, Backend::kMpi, torch::kCPU));
    EXPECT_EQ(&mesh->world(), world.get());
    EXPECT_EQ(mesh->gradients().size(), n);
    EXPECT_EQ(mesh->gradients().rank(), world->rank());
    if (ep == 1) {
      EXPECT_THROW(mesh->ep_group(), std::logic_error);
      continue;
    }
    const int dp_rank = world->rank() / ep, ep_rank = world->rank() % ep;
    EXPECT_EQ(mesh->ep_group().size(), ep);
    EXPECT_EQ(mesh->ep_group().rank(), ep_rank);
    EXPECT_EQ(mesh->expert_replicas().size(), n / ep);
    EXPECT_EQ(mesh->expert_replicas().rank(), dp_rank);
    // Summed world ranks: the ep group holds dp_rank * ep + 0 .. ep - 1; the replicas hold
    // 0 .. dp - 1 times ep plus ep_rank.
    torch::Tensor in_ep = torch::tensor({static_cast<int64_t>(world->rank())});
    MOA_ASSERT_OK(mesh->ep_group().AllReduce(in_ep, ReduceOp::kSum));
    EXPECT_EQ(in_ep.item<int64_t>(), dp_rank * ep * ep + ep * (ep - 1) / 2);
    torch::Tensor in_replicas = torch::tensor({static_cast<int64_t>(world->rank())});
    MOA_ASSERT_OK(mesh->expert_replicas().AllReduce(in_replicas, ReduceOp::kSum));
    const int dp = n / ep;
    EXPECT_EQ(in_replicas.item<int64_t>(), ep * dp * (dp - 1) / 2 + dp * ep_rank);
  }
  // A layout that does not match the world is refused, naming both.
  MeshLayout wrong;
  wrong.world_size = n + 1;
  wrong.dp = n + 1;
  auto refused = Mesh::Create(wrong, *world, Backend::kMpi, torch::kCPU);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("mpirun"), std::string::npos) << refused.status();
}

TEST(AutogradCollectivesTest, AllReduceSumBackwardSumsGradients) {
  auto world = MakeWorldCommunicator();
  const int r = world->rank(), n = world->size();
  torch::Tensor x = torch::full({3}, static_cast<float>(r + 1), torch::requires_grad());
  torch::Tensor total = DifferentiableAllReduceSum(x, world.get());
  EXPECT_TRUE(torch::allclose(total, torch::full({3}, static_cast<float>(n * (n + 1) / 2))));
  // d/dx_r of sum_j f(total) seen from every rank: the gradient arrives n times.
  (total * total).sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), torch::full({3}, 2.0f * n * (n * (n + 1) / 2))));
}

}  // namespace
}  // namespace moa::parallel

int main(int argc, char** argv) {
  moa::parallel::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
