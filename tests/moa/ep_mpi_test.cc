// Expert parallelism under mpirun (2 and 4 ranks): a sharded MoA layer on each rank's slice of
// the global batch gives the outputs, input gradients, router gradients (summed over ranks) and
// expert gradients (on the expert's holder, summed over its replicas) of the same layer on the
// whole batch in one process: with router noise, top-k = 2, the auxiliary loss and Kronecker
// dropout; with a capacity that drops assignments; with routing that sends every token to one
// expert (the other holders get no token); with the world split into dp x ep groups; and under
// bf16 autocast. Every case counts the bytes the exchange moved (bfloat16 under autocast).
#include <cmath>

#include <gtest/gtest.h>

#include "moa/autocast.h"
#include "moa/expert_placement.h"
#include "moa/moa_layer.h"
#include "parallel/mpi_communicator.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

struct Case {
  std::string name;
  std::string expert = "lora";
  int64_t top_k = 2;
  double capacity_factor = 0;
  bool all_to_one = false;  // the router prefers expert 2 for every token, no noise
  int ep = 0;               // 0: the whole world; else dp = world / ep groups
  bool input_grad = true;   // false: the layer's input needs no gradient (a first MoA layer)
  bool bf16 = false;        // both forwards under bf16 autocast
};

class ShardedLayerTest : public ::testing::TestWithParam<Case> {};

TEST_P(ShardedLayerTest, EqualsTheWholeBatchInOneProcess) {
  const Case c = GetParam();
  auto world = parallel::MakeWorldCommunicator();
  const int ranks = world->size(), me = world->rank();
  ASSERT_GT(ranks, 1) << "run under mpirun";
  const int ep = c.ep > 0 ? c.ep : ranks;
  if (ep > 4 || ranks % ep != 0) GTEST_SKIP() << ranks << " ranks do not make this mesh";
  MoaConfig config;
  config.expert = c.expert;
  config.top_k = c.top_k;
  config.capacity_factor = c.capacity_factor;
  config.noise = !c.all_to_one;
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
    if (c.all_to_one) {
      // A linear router whose bias puts expert 2 far ahead of the others.
      layer->router->proj->weight.zero_();
      layer->router->proj->bias.copy_(torch::tensor({0.0f, 1.0f, 50.0f, 2.0f}));
    }
    layer->train();
    return layer;
  };
  if (c.all_to_one) config.router = "linear";
  auto whole = build();
  auto sharded = build();
  std::vector<int64_t> costs;
  for (int64_t r : config.ranks) costs.push_back(r);
  MOA_ASSERT_OK_AND_ASSIGN(std::vector<int> owner, PartitionExperts(costs, ep));
  // dp-major ranks: rank = dp_rank * ep + ep_rank.
  MOA_ASSERT_OK_AND_ASSIGN(std::unique_ptr<parallel::Communicator> ep_group,
                           world->Split(me / ep, me % ep));
  MOA_ASSERT_OK_AND_ASSIGN(std::unique_ptr<parallel::Communicator> replicas,
                           world->Split(me % ep, me / ep));
  sharded->set_expert_parallel({ep_group.get(), owner});

  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({samples, tokens, dim});
  const torch::Tensor w = torch::randn({samples, tokens, out});
  // The whole batch, as one process sees it.
  const torch::Tensor xw = x.clone().requires_grad_(true);
  torch::Tensor yw;
  {
    AutocastScope autocast(torch::kCPU, c.bf16);
    yw = whole->Delta(xw);
  }
  ((yw * w).sum() + whole->aux_loss()).backward();
  if (c.capacity_factor > 0) {
    ASSERT_GT(whole->last_routing().dropped, 0) << "the capacity must drop assignments";
  }
  if (c.all_to_one) {
    ASSERT_EQ(whole->last_routing().expert_counts[2].item<int64_t>(), samples * tokens);
  }
  // This rank's slice, with noise rows, capacity and aux sums of the global batch.
  const int64_t per = samples / ranks;
  context->global_batch = samples;
  context->global_rows.clear();
  for (int64_t i = 0; i < per; ++i) context->global_rows.push_back(me * per + i);
  context->batch_group = world.get();
  const torch::Tensor xs = x.narrow(0, me * per, per).clone().requires_grad_(c.input_grad);
  torch::Tensor ys;
  {
    AutocastScope autocast(torch::kCPU, c.bf16);
    ys = sharded->Delta(xs);
  }
  // Each rank's aux loss is the global one; its backward all-reduce counts it once per rank.
  ((ys * w.narrow(0, me * per, per)).sum() + sharded->aux_loss() / ranks).backward();

  // The forward exchange moved each kept assignment whose expert another rank of the group holds
  // there (its input features) and back (its output features), in float32 or, under autocast,
  // in bfloat16: summed over ranks, those assignments times (in + out) times the element size.
  const torch::Tensor counts = sharded->last_routing().expert_counts.to(torch::kCPU);
  int64_t remote = 0;
  for (size_t e = 0; e < owner.size(); ++e) {
    if (owner[e] != me % ep) remote += counts[static_cast<int64_t>(e)].item<int64_t>();
  }
  torch::Tensor totals = torch::tensor({remote, sharded->timings().bytes_sent}, torch::kInt64);
  MOA_ASSERT_OK(world->AllReduce(totals, parallel::ReduceOp::kSum));
  ASSERT_GT(totals[0].item<int64_t>(), 0) << "no token crossed ranks";
  EXPECT_EQ(totals[1].item<int64_t>(), totals[0].item<int64_t>() * (dim + out) * (c.bf16 ? 2 : 4));

  // float32: elementwise. bfloat16 (unit roundoff u = 2^-8): the sharded and whole computations
  // round products of different row groups, and sums over the ranks add up to one rounding per
  // rank, so a difference is bounded by a few u of the tensor's largest entry; 8 u is allowed.
  auto close = [&](const torch::Tensor& actual, const torch::Tensor& expected, double rtol) {
    if (!c.bf16) return torch::allclose(actual, expected, rtol, 1e-6);
    const double scale = expected.abs().max().item<double>();
    return (actual.to(torch::kFloat32) - expected.to(torch::kFloat32)).abs().max().item<double>() <=
           8 * std::pow(2.0, -8) * scale;
  };
  EXPECT_TRUE(close(ys, yw.narrow(0, me * per, per).detach(), 1e-5));
  if (c.input_grad) EXPECT_TRUE(close(xs.grad(), xw.grad().narrow(0, me * per, per), 1e-5));
  auto reference = whole->named_parameters();
  for (auto& p : sharded->named_parameters()) {
    const std::string& name = p.key();
    const torch::Tensor& expected = reference[name].grad();
    if (name.rfind("router.", 0) == 0 || name == "bias") {
      torch::Tensor summed = p.value().grad().clone();
      MOA_ASSERT_OK(world->AllReduce(summed, parallel::ReduceOp::kSum));
      EXPECT_TRUE(close(summed, expected, 1e-4)) << name;
    } else if (name.rfind("experts.", 0) == 0) {
      const int e = std::stoi(name.substr(8, name.find('.', 8) - 8));
      if (owner[e] != me % ep) {
        EXPECT_FALSE(p.value().grad().defined()) << name << " is computed elsewhere";
        continue;
      }
      // The holder of each ep group has its group's tokens; summed over the replicas, the
      // whole batch's. An expert no token chose has no gradient anywhere.
      torch::Tensor summed =
          p.value().grad().defined() ? p.value().grad().clone() : torch::zeros_like(p.value());
      MOA_ASSERT_OK(replicas->AllReduce(summed, parallel::ReduceOp::kSum));
      const torch::Tensor want = expected.defined() ? expected : torch::zeros_like(p.value());
      EXPECT_TRUE(close(summed, want, 1e-4)) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ShardedLayerTest,
    ::testing::Values(Case{"lora_top2"}, Case{"kronecker_top2", "kronecker"},
                      Case{"lora_capacity", "lora", 2, 0.5},
                      Case{"kronecker_capacity", "kronecker", 1, 0.7},
                      Case{"all_to_one_expert", "lora", 1, 0, true},
                      Case{"all_to_one_no_input_gradient", "kronecker", 1, 0, true, 0, false},
                      Case{"dp2_ep2", "kronecker", 2, 0.6, false, 2},
                      Case{"lora_bf16", "lora", 2, 0, false, 0, true, true},
                      Case{"kronecker_bf16", "kronecker", 2, 0, false, 0, true, true}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace moa

int main(int argc, char** argv) {
  moa::parallel::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
