// Mixture-of-Adapters: the router against hand computations, keyed noise, top-k and gates,
// routed computation against the dense oracle (outputs and gradients), capacity, the auxiliary
// losses and the Kronecker update against python3-torch, and where gradients go.
#include <algorithm>
#include <cmath>

#include "common/safetensors.h"
#include "moa/autocast.h"
#include "moa/moa_layer.h"
#include "moa/peft.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

TEST(RouterTest, CosineLogitsByHand) {
  RouterImpl router(RouterOptions(2, 2).proj_dim(2));
  {
    torch::NoGradGuard no_grad;
    router.proj->weight.copy_(torch::eye(2));
    router.proj->bias.zero_();
    router.sim_matrix.copy_(torch::tensor({{2.0f, 0.0f}, {0.0f, 5.0f}}));  // columns e0, e1
  }
  // x = (3, 4): Px / |Px| = (0.6, 0.8); S_e / |S_e| = unit axes; scale exp(ln 2) = 2.
  const torch::Tensor logits = router.Logits(torch::tensor({{3.0f, 4.0f}, {-1.0f, 0.0f}}));
  EXPECT_TRUE(torch::allclose(logits, torch::tensor({{1.2f, 1.6f}, {-2.0f, 0.0f}}), 1e-6, 1e-6))
      << logits;
  {
    torch::NoGradGuard no_grad;
    router.temperature.fill_(10.0);  // clamped at ln 100: scale 100
  }
  EXPECT_NEAR(router.Logits(torch::tensor({{3.0f, 4.0f}}))[0][1].item<double>(), 80.0, 1e-4);
}

TEST(RouterTest, ParameterShapesAndInit) {
  torch::manual_seed(0);
  RouterImpl router(RouterOptions(768, 4));
  EXPECT_EQ(router.proj->weight.sizes(), (std::vector<int64_t>{256, 768}));
  EXPECT_EQ(router.sim_matrix.sizes(), (std::vector<int64_t>{256, 4}));
  EXPECT_NEAR(router.sim_matrix.std().item<double>(), 0.01, 0.001);
  EXPECT_NEAR(router.temperature.item<double>(), std::log(2.0), 1e-7);
  int64_t count = 0;
  for (const auto& p : router.parameters()) count += p.numel();
  EXPECT_EQ(count, 197889);  // the reference's router (docs/method.md, Router)
}

// moa.fp32_gate inside a bf16 autocast forward: the router's products stay float32 and equal the
// router outside autocast bit for bit; without it they run in bfloat16.
TEST(RouterTest, Fp32GateLeavesAutocast) {
  torch::manual_seed(2);
  RouterImpl fp32(RouterOptions(64, 4).proj_dim(32).fp32(true));
  RouterImpl plain(RouterOptions(64, 4).proj_dim(32));
  const torch::Tensor x = torch::randn({10, 64});
  const torch::Tensor outside = fp32.Logits(x);
  torch::Tensor inside, narrow;
  {
    AutocastScope bf16(torch::Device(torch::kCPU), true);
    inside = fp32.Logits(x);
    narrow = plain.proj->forward(x);
    EXPECT_TRUE(at::autocast::is_autocast_enabled(torch::kCPU)) << "the scope was not restored";
  }
  EXPECT_EQ(inside.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(inside, outside));
  EXPECT_EQ(narrow.scalar_type(), torch::kBFloat16);
}

TEST(RouteTest, NoNoiseInEvaluationAndKeyedNoiseInTraining) {
  torch::manual_seed(1);
  const torch::Tensor clean = torch::randn({4000, 4});
  RoutingContext ctx;
  ctx.seed = 3;
  ctx.step = 9;
  RouteOptions options;
  const Routing eval =
      Route(clean, options, ctx, /*layer=*/2, /*tokens_per_sample=*/10, /*training=*/false);
  EXPECT_TRUE(torch::equal(eval.probs, torch::softmax(clean, 1)));
  const Routing train = Route(clean, options, ctx, 2, 10, true);
  const Routing again = Route(clean, options, ctx, 2, 10, true);
  EXPECT_TRUE(torch::equal(train.probs, again.probs));
  // Recover the noise from the probabilities: log p - log softmax(clean) = noise/E + const.
  torch::Tensor noise = (torch::log(train.probs) - torch::log_softmax(clean, 1));
  noise = (noise - noise.mean(1, true)) * 4.0;  // centred per token
  // Per-token centring of 4 iid N(0, 1) values leaves variance 3/4.
  EXPECT_NEAR(noise.var().item<double>(), 0.75, 0.05);
  ctx.step = 10;
  EXPECT_FALSE(torch::equal(Route(clean, options, ctx, 2, 10, true).probs, train.probs));
  ctx.step = 9;
  EXPECT_FALSE(torch::equal(Route(clean, options, ctx, 3, 10, true).probs, train.probs));
}

TEST(RouteTest, NoiseRowsFollowTheGlobalBatch) {
  // A rank holding global samples {1, 3} of 4 gets exactly those samples' noise.
  torch::manual_seed(2);
  const int64_t per_sample = 5;
  const torch::Tensor clean = torch::randn({4 * per_sample, 3});
  RoutingContext whole;
  whole.seed = 7;
  const Routing full = Route(clean, RouteOptions(), whole, 0, per_sample, true);
  RoutingContext part = whole;
  part.global_batch = 4;
  part.global_rows = {1, 3};
  const torch::Tensor mine = torch::cat({clean.narrow(0, 5, 5), clean.narrow(0, 15, 5)});
  const Routing local = Route(mine, RouteOptions(), part, 0, per_sample, true);
  EXPECT_TRUE(torch::allclose(
      local.probs, torch::cat({full.probs.narrow(0, 5, 5), full.probs.narrow(0, 15, 5)})));
}

TEST(RouteTest, TopOneChoiceAndGates) {
  const torch::Tensor clean = torch::tensor({{0.0f, 2.0f, 1.0f}, {3.0f, 0.0f, 0.0f}});
  RouteOptions options;
  options.noise = false;
  const Routing r = Route(clean, options, RoutingContext(), 0, 1, true);
  EXPECT_EQ(r.experts[0][0].item<int64_t>(), 1);
  EXPECT_EQ(r.experts[1][0].item<int64_t>(), 0);
  const torch::Tensor p = torch::softmax(clean, 1);
  EXPECT_FLOAT_EQ(r.gates[0][0].item<float>(), p[0][1].item<float>());
  EXPECT_FLOAT_EQ(r.combine[0][1].item<float>(), p[0][1].item<float>());
  EXPECT_EQ(r.combine[0][0].item<float>(), 0.0f);
  options.top_k = 2;
  options.renormalize = true;
  const Routing r2 = Route(clean, options, RoutingContext(), 0, 1, true);
  EXPECT_EQ(r2.experts[0][1].item<int64_t>(), 2);
  EXPECT_TRUE(torch::allclose(r2.gates.sum(1), torch::ones({2})));
  EXPECT_EQ(r2.expert_tokens[0].numel() + r2.expert_tokens[1].numel() + r2.expert_tokens[2].numel(),
            4);
}

TEST(RouteTest, CapacityDropsLateTokensAndCountsThem) {
  // Every token prefers expert 0; capacity ceil(1.0 x 10 x 1 / 4) = 3.
  const torch::Tensor clean = torch::tensor({{5.0f, 0.0f, 0.0f, 0.0f}}).repeat({10, 1});
  RouteOptions options;
  options.noise = false;
  options.capacity_factor = 1.0;
  const Routing r = Route(clean, options, RoutingContext(), 0, 1, true);
  EXPECT_EQ(r.dropped, 7);
  EXPECT_TRUE(torch::equal(r.expert_tokens[0], torch::tensor({0, 1, 2}, torch::kInt64)));
  EXPECT_EQ(r.expert_tokens[1].numel(), 0);
  EXPECT_EQ(r.combine.narrow(0, 3, 7).abs().sum().item<float>(), 0.0f);
  // Evaluation keeps every assignment: its scores must not depend on how batches are cut.
  const Routing evaluated = Route(clean, options, RoutingContext(), 0, 1, /*training=*/false);
  EXPECT_EQ(evaluated.dropped, 0);
  EXPECT_EQ(evaluated.expert_tokens[0].numel(), 10);
}

// Two layers with identical parameters, one routed (or `first`) and one dense.
struct LayerPair {
  std::shared_ptr<MoaAdapterImpl> routed, dense;
};

LayerPair MakePair(MoaConfig config, int64_t in, int64_t out, std::shared_ptr<RoutingContext> ctx,
                   const std::string& first = "routed") {
  torch::manual_seed(5);
  auto rules = std::make_shared<KroneckerRulesImpl>(config.phm_dim, true);
  config.dispatch = first;
  auto routed = std::make_shared<MoaAdapterImpl>(in, out, config, 1, ctx, rules);
  config.dispatch = "dense";
  auto dense = std::make_shared<MoaAdapterImpl>(in, out, config, 1, ctx, rules);
  torch::NoGradGuard no_grad;
  auto src = routed->named_parameters();
  for (auto& p : dense->named_parameters()) {
    // LoRA's B starts at zero; make every expert matter.
    if (p.key().find(".B") != std::string::npos || p.key() == "bias") src[p.key()].normal_(0, 0.3);
    p.value().copy_(src[p.key()]);
  }
  return {routed, dense};
}

// Backpropagates the same weighted sum (plus each layer's auxiliary loss) through both layers'
// outputs and compares the input gradients and every parameter's; returns how many parameters
// got a gradient. With `all_defined`, every parameter of both must have one.
int ExpectSameGradients(const LayerPair& pair, const torch::Tensor& x1, const torch::Tensor& y1,
                        const torch::Tensor& x2, const torch::Tensor& y2, bool all_defined) {
  const torch::Tensor w = torch::randn_like(y1);
  ((y1 * w).sum() + pair.routed->aux_loss()).backward();
  ((y2 * w).sum() + pair.dense->aux_loss()).backward();
  EXPECT_TRUE(torch::allclose(x1.grad(), x2.grad(), 1e-5, 1e-6));
  auto dense_params = pair.dense->named_parameters();
  int with_grad = 0;
  for (auto& p : pair.routed->named_parameters()) {
    const torch::Tensor& g = p.value().grad();
    const torch::Tensor& gd = dense_params[p.key()].grad();
    EXPECT_EQ(g.defined(), gd.defined()) << p.key();
    if (all_defined) {
      EXPECT_TRUE(g.defined()) << p.key();
    }
    if (!g.defined() || !gd.defined()) continue;
    ++with_grad;
    // Float rounding in another order (the fused gate's backward) moves an entry by a few ulps of
    // the largest one: the absolute tolerance scales with it.
    const double largest = std::max(1.0, gd.abs().max().item<double>());
    EXPECT_TRUE(torch::allclose(g, gd, 1e-5, 1e-6 * largest))
        << p.key() << " " << (g - gd).abs().max() << " of " << gd.abs().max();
  }
  return with_grad;
}

// (expert, top_k): top-2 with a capacity that drops assignments, and top-1 without capacity,
// where every token goes to one expert and the routed layer permutes rows (PermuteRows).
class RoutedVsDenseTest : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(RoutedVsDenseTest, OutputsAndGradientsAgree) {
  MoaConfig config;
  config.expert = std::get<0>(GetParam());
  config.top_k = std::get<1>(GetParam());
  config.capacity_factor = config.top_k == 2 ? 0.6 : 0.0;  // top-2: some assignments dropped
  config.phm_dim = 8;
  config.kron_dropout = 0.5;
  auto ctx = std::make_shared<RoutingContext>();
  ctx->seed = 11;
  ctx->step = 4;
  LayerPair pair = MakePair(config, 16, 24, ctx);
  pair.routed->train();
  pair.dense->train();
  torch::manual_seed(9);
  const torch::Tensor x = torch::randn({3, 7, 16});
  const torch::Tensor xr = x.clone().requires_grad_(true);
  const torch::Tensor xd = x.clone().requires_grad_(true);
  const torch::Tensor yr = pair.routed->Delta(xr);
  const torch::Tensor yd = pair.dense->Delta(xd);
  if (config.top_k == 2) {
    EXPECT_GT(pair.routed->last_routing().dropped, 0);
  } else {
    EXPECT_EQ(pair.routed->last_routing().dropped, 0);
  }
  ASSERT_EQ(yr.sizes(), (std::vector<int64_t>{3, 7, 24}));
  EXPECT_TRUE(torch::allclose(yr, yd, 1e-5, 1e-6)) << (yr - yd).abs().max();
  const int with_grad = ExpectSameGradients(pair, xr, yr, xd, yd, /*all_defined=*/false);
  EXPECT_GE(with_grad, 7);  // router (proj weight, bias, sim_matrix, temperature) + experts
}

INSTANTIATE_TEST_SUITE_P(Experts, RoutedVsDenseTest,
                         ::testing::Combine(::testing::Values("lora", "kronecker"),
                                            ::testing::Values(2, 1)));

// The stacked computation (one GEMM for the router's projection and every LoRA expert's
// down-projection, rank columns masked by the gates, one up-projection) against the dense oracle:
// outputs, the auxiliary loss and every gradient, for (top_k, fp32 router, tokens): top-2 with a
// capacity that drops assignments, top-1, the float32 router (which keeps its own GEMM), and a
// single token (three experts get nothing). Experts that get no token have zero gradients in both,
// as in the reference.
class StackedVsDenseTest : public ::testing::TestWithParam<std::tuple<int, bool, int64_t>> {};

TEST_P(StackedVsDenseTest, OutputsAndGradientsAgree) {
  MoaConfig config;
  const auto [top_k, fp32_gate, samples] = GetParam();
  config.top_k = top_k;
  config.fp32_gate = fp32_gate;
  config.capacity_factor = top_k == 2 ? 0.6 : 0.0;
  auto ctx = std::make_shared<RoutingContext>();
  ctx->seed = 11;
  ctx->step = 4;
  LayerPair pair = MakePair(config, 16, 24, ctx, "stacked");
  ASSERT_TRUE(pair.routed->UsesStackedExperts(true));
  ASSERT_FALSE(pair.dense->UsesStackedExperts(true));
  pair.routed->train();
  pair.dense->train();
  torch::manual_seed(9);
  const int64_t tokens = samples == 1 ? 1 : 7;
  const torch::Tensor x = torch::randn({samples, tokens, 16});
  const torch::Tensor xs = x.clone().requires_grad_(true);
  const torch::Tensor xd = x.clone().requires_grad_(true);
  const torch::Tensor ys = pair.routed->Delta(xs);
  const torch::Tensor yd = pair.dense->Delta(xd);
  EXPECT_EQ(pair.routed->last_routing().dropped, pair.dense->last_routing().dropped);
  if (top_k == 2) {
    EXPECT_GT(pair.routed->last_routing().dropped, 0);
  }
  ASSERT_EQ(ys.sizes(), (std::vector<int64_t>{samples, tokens, 24}));
  EXPECT_TRUE(torch::allclose(ys, yd, 1e-5, 1e-6)) << (ys - yd).abs().max();
  EXPECT_NEAR(pair.routed->aux_loss().item<double>(), pair.dense->aux_loss().item<double>(), 1e-7);
  const int with_grad = ExpectSameGradients(pair, xs, ys, xd, yd, /*all_defined=*/true);
  EXPECT_EQ(with_grad, 4 + 2 * 4);  // router (proj weight, bias, sim_matrix, temperature), A and B
  // The statistics count the kept assignments per expert, as the routing made them.
  const RouterStats stats = pair.routed->stats();
  const torch::Tensor counts = pair.dense->last_routing().expert_counts;
  for (int64_t e = 0; e < 4; ++e) EXPECT_EQ(stats.assignments[e], counts[e].item<int64_t>());
  EXPECT_EQ(stats.forwards, 1);
}

INSTANTIATE_TEST_SUITE_P(Routing, StackedVsDenseTest,
                         ::testing::Values(std::make_tuple(2, false, int64_t{3}),
                                           std::make_tuple(1, false, int64_t{3}),
                                           std::make_tuple(1, true, int64_t{3}),
                                           std::make_tuple(1, false, int64_t{1})));

// The fused gate's other uses against the dense oracle: Switch Transformer's loss through its
// clean probabilities, and an evaluation forward of a layer with a capacity (which evaluation
// ignores, so the fused gate runs there too).
TEST(FusedStackedTest, SwitchLossAndEvaluationWithCapacityAgreeWithDense) {
  MoaConfig config;
  config.aux_type = "switch";
  auto ctx = std::make_shared<RoutingContext>();
  ctx->seed = 3;
  ctx->step = 2;
  LayerPair pair = MakePair(config, 16, 24, ctx, "stacked");
  pair.routed->train();
  pair.dense->train();
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({3, 7, 16});
  const torch::Tensor xs = x.clone().requires_grad_(true);
  const torch::Tensor xd = x.clone().requires_grad_(true);
  const torch::Tensor ys = pair.routed->Delta(xs);
  const torch::Tensor yd = pair.dense->Delta(xd);
  ASSERT_TRUE(pair.routed->last_routing().clean_probs.defined()) << "the fused gate did not run";
  EXPECT_TRUE(torch::allclose(ys, yd, 1e-5, 1e-6)) << (ys - yd).abs().max();
  EXPECT_NEAR(pair.routed->aux_loss().item<double>(), pair.dense->aux_loss().item<double>(), 1e-7);
  EXPECT_GT(pair.dense->aux_loss().item<double>(), 0.0);
  EXPECT_EQ(ExpectSameGradients(pair, xs, ys, xd, yd, /*all_defined=*/true), 4 + 2 * 4);

  config.aux_type = "importance_load";
  config.capacity_factor = 0.3;
  LayerPair capped = MakePair(config, 16, 24, ctx, "stacked");
  capped.routed->eval();
  capped.dense->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor es = capped.routed->Delta(x);
  const torch::Tensor ed = capped.dense->Delta(x);
  EXPECT_EQ(capped.dense->last_routing().dropped, 0);
  EXPECT_TRUE(torch::allclose(es, ed, 1e-5, 1e-6)) << (es - ed).abs().max();
  EXPECT_TRUE(
      torch::equal(capped.routed->last_routing().experts, capped.dense->last_routing().experts));
}

// `auto` stacks LoRA experts, routes Kronecker experts, and routes LoRA experts once they are
// sharded over expert-parallel ranks (in training; evaluation runs them locally).
TEST(MoaLayerTest, AutoDispatchChoosesByExpertKind) {
  MoaConfig config;
  auto ctx = std::make_shared<RoutingContext>();
  auto rules = std::make_shared<KroneckerRulesImpl>(8, true);
  MoaAdapterImpl lora(16, 16, config, 0, ctx, rules);
  EXPECT_TRUE(lora.UsesStackedExperts(true));
  config.expert = "kronecker";
  config.phm_dim = 8;
  MoaAdapterImpl kron(16, 16, config, 0, ctx, rules);
  EXPECT_FALSE(kron.UsesStackedExperts(true));
}

TEST(MoaLayerTest, DroppedTokensPassThroughW0Alone) {
  MoaConfig config;
  config.noise = false;
  config.capacity_factor = 0.25;  // capacity ceil(0.25 x 8 / 4) = 1 per expert
  auto ctx = std::make_shared<RoutingContext>();
  LayerPair pair = MakePair(config, 8, 8, ctx);
  pair.routed->train();
  const torch::Tensor x = torch::randn({8, 8});
  const torch::Tensor y = pair.routed->Delta(x);
  const Routing& r = pair.routed->last_routing();
  const torch::Tensor kept = r.kept.select(1, 0);
  EXPECT_EQ(r.dropped, 8 - kept.sum().item<int64_t>());
  EXPECT_LE(kept.sum().item<int64_t>(), 4);
  for (int64_t t = 0; t < 8; ++t) {
    if (!kept[t].item<bool>()) {
      EXPECT_EQ(y[t].abs().sum().item<float>(), 0.0f) << "token " << t;
    }
  }
}

TEST(MoaLayerTest, AllTokensToOneExpertAndIdleExperts) {
  MoaConfig config;
  config.noise = false;
  auto ctx = std::make_shared<RoutingContext>();
  LayerPair pair = MakePair(config, 8, 8, ctx);
  {
    torch::NoGradGuard no_grad;
    for (auto* layer : {pair.routed.get(), pair.dense.get()}) {
      layer->router->sim_matrix.zero_();
      layer->router->sim_matrix.select(1, 2).fill_(1.0);
      layer->router->proj->weight.zero_();
      layer->router->proj->bias.fill_(1.0);  // P x = (1, ..., 1) for every token: expert 2 wins
    }
  }
  pair.routed->train();
  pair.dense->train();
  const torch::Tensor x = torch::randn({6, 8});
  const torch::Tensor y = pair.routed->Delta(x);
  EXPECT_EQ(pair.routed->last_routing().expert_counts[2].item<int64_t>(), 6);
  EXPECT_TRUE(torch::allclose(y, pair.dense->Delta(x), 1e-5, 1e-6));
  y.sum().backward();
  // Routed LoRA experts run as one grouped product: an idle expert gets a zero gradient, as in
  // the dense reference.
  const torch::Tensor idle = pair.routed->named_parameters()["experts.0.B"].grad();
  ASSERT_TRUE(idle.defined());
  EXPECT_EQ(idle.abs().sum().item<float>(), 0.0f);
  EXPECT_GT(pair.routed->named_parameters()["experts.2.B"].grad().abs().sum().item<float>(), 0.0f);
}

// The grouped LoRA product of the routed computation (one GEMM through every expert's A, rank
// columns masked per row, one GEMM through the Bs) on a single token, top-1 and top-2: three or
// two experts get nothing, and every gradient, zero ones included, equals the dense oracle's.
TEST(RoutedVsDenseTest, GroupedLoraOnASingleToken) {
  for (int64_t top_k : {1, 2}) {
    MoaConfig config;
    config.top_k = top_k;
    auto ctx = std::make_shared<RoutingContext>();
    ctx->seed = 3;
    LayerPair pair = MakePair(config, 16, 24, ctx);
    pair.routed->train();
    pair.dense->train();
    torch::manual_seed(2);
    const torch::Tensor x = torch::randn({1, 16});
    const torch::Tensor xr = x.clone().requires_grad_(true);
    const torch::Tensor xd = x.clone().requires_grad_(true);
    const torch::Tensor yr = pair.routed->Delta(xr);
    const torch::Tensor yd = pair.dense->Delta(xd);
    EXPECT_TRUE(torch::allclose(yr, yd, 1e-5, 1e-6)) << top_k << ": " << (yr - yd).abs().max();
    const int with_grad = ExpectSameGradients(pair, xr, yr, xd, yd, /*all_defined=*/true);
    EXPECT_EQ(with_grad, 4 + 2 * 4) << "router (4 tensors) and both factors of 4 experts";
  }
}

TEST(AuxLossTest, MatchesPythonReference) {
  torch::manual_seed(4);
  const torch::Tensor clean = torch::randn({300, 4}) * 2;
  RoutingContext ctx;
  ctx.seed = 1;
  for (int64_t k : {1, 2}) {
    RouteOptions options;
    options.top_k = k;
    const Routing r = Route(clean, options, ctx, 0, 1, true);
    test::TempDir dir;
    MOA_ASSERT_OK(WriteSafetensors(
        dir.File("in.safetensors"),
        {{"clean_logits", clean}, {"noisy_probs", r.probs}, {"experts", r.experts}}));
    ASSERT_EQ(test::RunPython("moa_reference.py", "aux " + dir.File("in.safetensors") + " " +
                                                      dir.File("out.safetensors")),
              0);
    MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile ref, ReadSafetensors(dir.File("out.safetensors")));
    EXPECT_NEAR(ImportanceLoadLoss(r, k, 0.01).item<double>(),
                ref.tensors.at("importance_load").item<double>(), 1e-9)
        << "k = " << k;
    EXPECT_NEAR(SwitchLoss(r, 0.01).item<double>(), ref.tensors.at("switch").item<double>(), 1e-9);
  }
}

TEST(KroneckerTest, UpdateMatrixEqualsTorchKron) {
  torch::manual_seed(6);
  auto rules = std::make_shared<KroneckerRulesImpl>(4, false);
  KroneckerImpl k(KroneckerOptions(12, 20, 3), rules);
  const torch::Tensor h = k.UpdateMatrix(false, 0);
  ASSERT_EQ(h.sizes(), (std::vector<int64_t>{12, 20}));
  test::TempDir dir;
  MOA_ASSERT_OK(WriteSafetensors(
      dir.File("in.safetensors"),
      {{"L", k.L}, {"R", k.R}, {"left", rules->rule1_left}, {"right", rules->rule1_right}}));
  ASSERT_EQ(test::RunPython("moa_reference.py", "kron " + dir.File("in.safetensors") + " " +
                                                    dir.File("out.safetensors")),
            0);
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile ref, ReadSafetensors(dir.File("out.safetensors")));
  const torch::Tensor expected = ref.tensors.at("H").to(torch::kFloat32);
  EXPECT_LE((h - expected).abs().max().item<double>(),
            1e-6 * (1 + expected.abs().max().item<double>()));
}

TEST(KroneckerTest, DropoutOnlyInTrainingAndKeyed) {
  torch::manual_seed(7);
  auto rules = std::make_shared<KroneckerRulesImpl>(8, false);
  KroneckerImpl k(KroneckerOptions(16, 48, 2).dropout(0.5), rules);
  const torch::Tensor clean = k.UpdateMatrix(false, 123);
  EXPECT_TRUE(torch::equal(clean, k.UpdateMatrix(false, 456)));
  const torch::Tensor a = k.UpdateMatrix(true, 123);
  EXPECT_TRUE(torch::equal(a, k.UpdateMatrix(true, 123)));
  EXPECT_FALSE(torch::equal(a, k.UpdateMatrix(true, 124)));
  const torch::Tensor kept = a.ne(0);
  const double kept_fraction = kept.to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(kept_fraction, 0.5, 0.05);  // 768 entries: 5 standard deviations is about 0.09
  EXPECT_TRUE(torch::allclose(a.masked_select(kept), 2 * clean.masked_select(kept)));
}

// x H through H's structure (never building it) equals the product with the built H, forward
// and backward (the input, both factors and both shared rule vectors), for one token and many,
// square and non-square blocks, rank 1 and 3; and Apply builds H only for training's dropout.
TEST(KroneckerTest, StructuredProductEqualsProductWithH) {
  struct Shape {
    int64_t n, in, out, rank, tokens;
  };
  for (const Shape& c : {Shape{4, 12, 20, 3, 1}, Shape{8, 16, 48, 1, 37}, Shape{2, 6, 6, 2, 5}}) {
    torch::manual_seed(c.tokens);
    auto rules = std::make_shared<KroneckerRulesImpl>(c.n, false);
    KroneckerImpl k(KroneckerOptions(c.in, c.out, c.rank).dropout(0.5), rules);
    {
      torch::NoGradGuard no_grad;
      rules->rule1_left.normal_();  // U(-0.01, 0.01) rules would hide most of H
      rules->rule1_right.normal_();
    }
    const torch::Tensor x = torch::randn({c.tokens, 1, c.in});
    const torch::Tensor w = torch::randn({c.tokens, 1, c.out});
    const std::vector<torch::Tensor> params = {k.L, k.R, rules->rule1_left, rules->rule1_right};
    auto gradients = [&](bool structured) {
      const torch::Tensor xi = x.clone().requires_grad_(true);
      const torch::Tensor y =
          structured ? k.Product(xi) : torch::matmul(xi, k.UpdateMatrix(false, 0));
      EXPECT_EQ(y.sizes(), (std::vector<int64_t>{c.tokens, 1, c.out}));
      std::vector<torch::Tensor> inputs = params;
      inputs.push_back(xi);
      std::vector<torch::Tensor> out = torch::autograd::grad({(y * w).sum()}, inputs);
      out.insert(out.begin(), y.detach());
      return out;
    };
    const std::vector<torch::Tensor> structured = gradients(true), built = gradients(false);
    const std::vector<std::string> names = {"y", "L", "R", "rule1_left", "rule1_right", "x"};
    for (size_t i = 0; i < names.size(); ++i) {
      const double scale = 1 + built[i].abs().max().item<double>();
      EXPECT_LE((structured[i] - built[i]).abs().max().item<double>(), 2e-6 * scale)
          << names[i] << " n=" << c.n << " tokens=" << c.tokens;
    }
    // Evaluation and dropout-free training take the structured product; training with dropout
    // applies the masked H.
    EXPECT_TRUE(torch::equal(k.Apply(x, false, 9), k.Product(x)));
    EXPECT_TRUE(torch::allclose(k.Apply(x, true, 9), torch::matmul(x, k.UpdateMatrix(true, 9)),
                                1e-5, 1e-6));
    EXPECT_FALSE(torch::allclose(k.Apply(x, true, 9), k.Product(x), 1e-3, 1e-3));
  }
}

TEST(MoaModelTest, GradientsReachRouterAndExpertsNeverW0) {
  torch::manual_seed(8);
  VisionTransformerImpl model(
      ViTOptions().img_size(16).patch_size(4).in_chans(1).dim(32).depth(4).heads(4).num_classes(3));
  PeftOptions peft;
  peft.method = "moa";
  peft.blocks = "every_other";
  peft.targets = "qkv";
  MoaConfig moa;
  moa.expert = "kronecker";
  moa.phm_dim = 8;
  MOA_ASSERT_OK(ApplyPeft(model, peft, moa));
  ASSERT_EQ(MoaLayers(model).size(), 2u);
  model.train();
  const torch::Tensor loss =
      model.forward(torch::randn({4, 1, 16, 16})).pow(2).sum() + AuxiliaryLoss(model);
  loss.backward();
  for (auto& p : model.named_parameters()) {
    const ParameterGroup group = GroupOf(p.key());
    if (group == ParameterGroup::kBackbone) {
      EXPECT_FALSE(p.value().grad().defined()) << p.key();
      continue;
    }
    if (p.key().find("rule0") != std::string::npos) {
      EXPECT_FALSE(p.value().grad().defined()) << "the reference's rule0 is never used";
      continue;
    }
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
  }
}

// Per MoA layer on ViT-B/16's qkv (768 -> 2304), experts of ranks 1, 2, 4, 8: LoRA experts
// sum r (768 + 2304), Kronecker experts sum 64 r (12 + 36), both 46,080; the router in d + d + d E
// + 1 with d = 256, E = 4: 197,889. Kronecker layers add their 2,304-entry bias and the model its
// 16,384 shared rule parameters. The paper's counts: 1,463,814 and 1,494,022 (docs/method.md).
TEST(MoaModelTest, PaperParameterCounts) {
  const int64_t lora_experts = (1 + 2 + 4 + 8) * (768 + 2304);
  const int64_t kronecker_experts = 64 * (1 + 2 + 4 + 8) * (12 + 36);
  const int64_t router = 768 * 256 + 256 + 256 * 4 + 1;
  ASSERT_EQ(lora_experts, 46080);
  ASSERT_EQ(kronecker_experts, 46080);
  ASSERT_EQ(router, 197889);
  struct Row {
    const char* expert;
    const char* blocks;
    int64_t trainable_without_head;
  };
  const int64_t lora_layer = lora_experts + router;
  const int64_t kronecker_layer = kronecker_experts + router + 2304;
  ASSERT_EQ(6 * lora_layer, 1463814);
  ASSERT_EQ(6 * kronecker_layer + 16384, 1494022);
  for (const Row& row :
       {Row{"lora", "every_other", 6 * lora_layer}, Row{"lora", "last:2", 2 * lora_layer},
        Row{"kronecker", "every_other", 6 * kronecker_layer + 16384}}) {
    VisionTransformerImpl vit(ViTOptions().norm_pre(true).norm_eps(1e-5).num_classes(7));
    PeftOptions peft;
    peft.method = "moa";
    peft.blocks = row.blocks;
    peft.targets = "qkv";
    MoaConfig moa;
    moa.expert = row.expert;
    MOA_ASSERT_OK(ApplyPeft(vit, peft, moa));
    const ParameterCounts c = CountParameters(vit);
    EXPECT_EQ(c.trainable - c.head, row.trainable_without_head) << row.expert << " " << row.blocks;
    // timm's CLIP ViT-B/16 without its head: the patch embedding (no bias), class token,
    // positions, the pre-norm, 12 blocks (two norms, qkv, proj, fc1, fc2), the final norm.
    EXPECT_EQ(c.backbone, 768 * 3 * 16 * 16 + 768 + 197 * 768 + 2 * 768 +
                              12 * (2 * 2 * 768 + 768 * 2304 + 2304 + 768 * 768 + 768 + 768 * 3072 +
                                    3072 + 3072 * 768 + 768) +
                              2 * 768);
    EXPECT_EQ(c.backbone, 85799424);
  }
}

}  // namespace
}  // namespace moa
