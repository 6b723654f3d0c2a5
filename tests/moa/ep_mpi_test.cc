// Expert parallelism under mpirun (2 and 4 ranks): a sharded MoA layer on each rank's slice of
// the global batch gives the outputs, input gradients, router gradients (summed over ranks) and
// expert gradients (on the expert's holder) of the same layer on the whole batch in one process,
// with router noise, top-k = 2, the auxiliary loss, and Kronecker dropout.
#include <gtest/gtest.h>

#include "moa/expert_placement.h"
#include "moa/moa_layer.h"
#include "parallel/mpi_communicator.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

class ShardedLayerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ShardedLayerTest, EqualsTheWholeBatchInOneProcess) {
  auto world = parallel::MakeWorldCommunicator();
  const int ranks = world->size(), me = world->rank();
  ASSERT_GT(ranks, 1) << "run under mpirun";
  MoaConfig config;
  config.expert = GetParam();
  config.top_k = 2;
  config.phm_dim = 8;
  config.aux_loss = true;
  config.proj_dim = 8;
  const int64_t samples = 8, tokens = 5, dim = 16, out = 24;
  auto context = std::make_shared<RoutingContext>();
  context->seed = 3;
  context->step = 7;

  auto build = [&] {
    torch::manual_seed(11);
    auto rules = std::make_shared<KroneckerRulesImpl>(config.phm_dim, true);
    auto layer = std::make_shared<MoaAdapterImpl>(dim, out, config, 2, context, rules);
    torch::NoGradGuard no_grad;
    for (auto& p : layer->named_parameters()) {
      if (p.key().find(".B") != std::string::npos) p.value().normal_(0, 0.3);
    }
    layer->train();
    return layer;
  };
  auto whole = build();
  auto sharded = build();
  std::vector<int64_t> costs;
  for (int64_t r : config.ranks) costs.push_back(r);
  MOA_ASSERT_OK_AND_ASSIGN(std::vector<int> owner, PartitionExperts(costs, std::min(ranks, 4)));
  if (ranks > 4) GTEST_SKIP() << "more ranks than experts";
  sharded->set_expert_parallel({world.get(), owner});

  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({samples, tokens, dim});
  const torch::Tensor w = torch::randn({samples, tokens, out});
  // The whole batch, as one process sees it.
  const torch::Tensor xw = x.clone().requires_grad_(true);
  const torch::Tensor yw = whole->Delta(xw);
  ((yw * w).sum() + whole->aux_loss()).backward();
  // This rank's slice, with noise rows and aux sums of the global batch.
  const int64_t per = samples / ranks;
  context->global_batch = samples;
  context->global_rows.clear();
  for (int64_t i = 0; i < per; ++i) context->global_rows.push_back(me * per + i);
  context->dp_group = world.get();
  const torch::Tensor xs = x.narrow(0, me * per, per).clone().requires_grad_(true);
  const torch::Tensor ys = sharded->Delta(xs);
  // Each rank's aux loss is the global one; its backward all-reduce counts it once per rank.
  ((ys * w.narrow(0, me * per, per)).sum() + sharded->aux_loss() / ranks).backward();

  EXPECT_TRUE(torch::allclose(ys, yw.narrow(0, me * per, per).detach(), 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(xs.grad(), xw.grad().narrow(0, me * per, per), 1e-5, 1e-6));
  auto reference = whole->named_parameters();
  for (auto& p : sharded->named_parameters()) {
    const std::string& name = p.key();
    const torch::Tensor& expected = reference[name].grad();
    if (name.rfind("router.", 0) == 0) {
      torch::Tensor summed = p.value().grad().clone();
      MOA_ASSERT_OK(world->AllReduce(summed, parallel::ReduceOp::kSum));
      EXPECT_TRUE(torch::allclose(summed, expected, 1e-4, 1e-6)) << name;
    } else if (name.rfind("experts.", 0) == 0) {
      const int e = std::stoi(name.substr(8, name.find('.', 8) - 8));
      if (owner[e] == me) {
        ASSERT_TRUE(p.value().grad().defined()) << name;
        EXPECT_TRUE(torch::allclose(p.value().grad(), expected, 1e-4, 1e-6)) << name;
      } else {
        EXPECT_FALSE(p.value().grad().defined()) << name << " is computed elsewhere";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Experts, ShardedLayerTest, ::testing::Values("lora", "kronecker"));

}  // namespace
}  // namespace moa

int main(int argc, char** argv) {
  moa::parallel::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
