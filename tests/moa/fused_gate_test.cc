// FusedCosineGate against the same formula written in ATen operations (in double precision):
// outputs and the gradients of the gated columns, the clean probabilities and the load terms with
// respect to the shared GEMM's output and the router's keys, with and without noise, for one
// token, for experts that get no token, for a token whose projection is zero, and for the
// auxiliary loss alone.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <vector>

#include "moa/fused_gate.h"

namespace moa {
namespace {

constexpr int64_t kProjDim = 6;
const std::vector<int64_t> kColumnExpert = {0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
constexpr int64_t kExperts = 4;

struct PlainGate {
  torch::Tensor gated, clean_probs, load_terms, clean_logits, probs, experts, combine;
};

// The formula as RouterImpl::Logits, Route (top-1, no capacity) and ImportanceLoadLoss write it.
PlainGate Plain(const torch::Tensor& both, const torch::Tensor& keys, const torch::Tensor& noise,
                const torch::Tensor& column_expert) {
  const torch::Tensor projection = both.narrow(1, 0, kProjDim);
  const torch::Tensor low = both.narrow(1, kProjDim, both.size(1) - kProjDim);
  const torch::Tensor unit = projection / projection.norm(2, 1, true).clamp_min(1e-12);
  PlainGate p;
  p.clean_logits = unit.mm(keys);
  p.probs = torch::softmax(noise.defined() ? p.clean_logits + noise : p.clean_logits, 1);
  auto [gate, chosen] = p.probs.max(1, /*keepdim=*/true);
  p.experts = chosen;
  p.combine = torch::zeros_like(p.probs).scatter(1, chosen, gate);
  p.gated = low * p.combine.index_select(1, column_expert);
  p.clean_probs = torch::softmax(p.clean_logits, 1);
  const double sigma = 1.0 / kExperts;
  p.load_terms = 0.5 * (1.0 + torch::erf((p.clean_probs - gate) / sigma / std::sqrt(2.0)));
  return p;
}

struct Case {
  const char* name;
  int64_t tokens;
  bool noise;
  bool aux;
  bool gated_gradient;    // false: only the auxiliary terms send a gradient
  int64_t forced_expert;  // >= 0: noise that sends every token to this expert
  bool zero_token;        // token 0's projection is zero (|p| below the normalisation's eps)
};

class FusedGateTest : public ::testing::TestWithParam<Case> {};

TEST_P(FusedGateTest, EqualsTheFormulaForwardAndBackward) {
  const Case& c = GetParam();
  torch::manual_seed(3);
  const auto options = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t columns = static_cast<int64_t>(kColumnExpert.size());
  torch::Tensor both_value = torch::randn({c.tokens, kProjDim + columns}, options);
  if (c.zero_token) both_value[0].narrow(0, 0, kProjDim).zero_();
  const torch::Tensor keys_value = torch::randn({kProjDim, kExperts}, options) * 2;
  torch::Tensor noise;
  if (c.noise) noise = torch::randn({c.tokens, kExperts}, options) / kExperts;
  if (c.forced_expert >= 0) {
    noise = torch::zeros({c.tokens, kExperts}, options);
    noise.select(1, c.forced_expert).fill_(50.0);
  }
  const torch::Tensor column_expert = torch::tensor(kColumnExpert, torch::kInt64);

  const torch::Tensor both_f = both_value.clone().requires_grad_(true);
  const torch::Tensor keys_f = keys_value.clone().requires_grad_(true);
  const FusedGate fused = FusedCosineGate(both_f, kProjDim, keys_f, noise, column_expert, c.aux);
  const torch::Tensor both_p = both_value.clone().requires_grad_(true);
  const torch::Tensor keys_p = keys_value.clone().requires_grad_(true);
  const PlainGate plain = Plain(both_p, keys_p, noise, column_expert);

  EXPECT_TRUE(torch::equal(fused.experts, plain.experts));
  if (c.forced_expert >= 0) {
    EXPECT_TRUE(fused.experts.eq(c.forced_expert).all().item<bool>());
  }
  EXPECT_TRUE(torch::allclose(fused.clean_logits, plain.clean_logits, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(fused.probs, plain.probs, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(fused.gated, plain.gated, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(fused.gates, plain.probs.gather(1, plain.experts), 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(fused.combine, plain.combine, 1e-12, 1e-12));
  ASSERT_EQ(fused.clean_probs.defined(), c.aux);
  ASSERT_EQ(fused.load_terms.defined(), c.aux);

  // A random weighting of every differentiable output, the same for both.
  const torch::Tensor w_gated = torch::randn_like(plain.gated);
  const torch::Tensor w_clean = torch::randn_like(plain.clean_probs);
  const torch::Tensor w_load = torch::randn_like(plain.load_terms);
  torch::Tensor loss_f = torch::zeros({}, options), loss_p = torch::zeros({}, options);
  if (c.gated_gradient) {
    loss_f = loss_f + (fused.gated * w_gated).sum();
    loss_p = loss_p + (plain.gated * w_gated).sum();
  }
  if (c.aux) {
    EXPECT_TRUE(torch::allclose(fused.clean_probs, plain.clean_probs, 1e-12, 1e-12));
    EXPECT_TRUE(torch::allclose(fused.load_terms, plain.load_terms, 1e-12, 1e-12));
    loss_f = loss_f + (fused.clean_probs * w_clean).sum() + (fused.load_terms * w_load).sum();
    loss_p = loss_p + (plain.clean_probs * w_clean).sum() + (plain.load_terms * w_load).sum();
  }
  loss_f.backward();
  loss_p.backward();
  ASSERT_TRUE(both_f.grad().defined());
  ASSERT_TRUE(keys_f.grad().defined());
  EXPECT_TRUE(torch::allclose(both_f.grad(), both_p.grad(), 1e-10, 1e-12))
      << (both_f.grad() - both_p.grad()).abs().max();
  EXPECT_TRUE(torch::allclose(keys_f.grad(), keys_p.grad(), 1e-10, 1e-12))
      << (keys_f.grad() - keys_p.grad()).abs().max();
  // Something flowed: the gradient is not all zero.
  EXPECT_GT(both_p.grad().abs().sum().item<double>(), 0.0);
  if (c.forced_expert >= 0) {
    // Only the chosen expert's rank columns get a gradient from the gated output.
    for (int64_t col = 0; col < columns; ++col) {
      if (kColumnExpert[col] == c.forced_expert) continue;
      EXPECT_EQ(both_f.grad().select(1, kProjDim + col).abs().max().item<double>(), 0.0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, FusedGateTest,
                         ::testing::Values(Case{"training", 9, true, true, true, -1, false},
                                           Case{"evaluation", 9, false, false, true, -1, false},
                                           Case{"single_token", 1, true, true, true, -1, false},
                                           Case{"idle_experts", 7, false, true, true, 2, false},
                                           Case{"zero_projection", 5, true, true, true, -1, true},
                                           Case{"aux_only", 9, true, true, false, -1, false},
                                           Case{"many_tokens", 1000, true, true, true, -1, false}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

// The function's node must not outlive the step: nothing it saved may point back at it (an output
// kept in its saved data would, and would keep the graph of every step alive).
TEST(FusedGateTest, TheGraphIsFreedAfterTheBackward) {
  const torch::Tensor both = torch::randn({8, kProjDim + 15}).requires_grad_(true);
  const torch::Tensor keys = torch::randn({kProjDim, kExperts}).requires_grad_(true);
  const torch::Tensor column_expert = torch::tensor(kColumnExpert, torch::kInt64);
  std::weak_ptr<torch::autograd::Node> node;
  {
    const FusedGate gate =
        FusedCosineGate(both, kProjDim, keys, torch::Tensor(), column_expert, true);
    node = gate.gated.grad_fn();
    ASSERT_FALSE(node.expired());
    (gate.gated.sum() + gate.clean_probs.sum() + gate.load_terms.sum()).backward();
  }
  EXPECT_TRUE(node.expired());
  {
    const FusedGate unused =
        FusedCosineGate(both, kProjDim, keys, torch::Tensor(), column_expert, true);
    node = unused.clean_probs.grad_fn();
  }
  EXPECT_TRUE(node.expired()) << "a forward without backward keeps its node alive";
}

TEST(FusedGateTest, NoGraphWithoutGradMode) {
  const torch::Tensor both = torch::randn({4, kProjDim + 15}).requires_grad_(true);
  const torch::Tensor keys = torch::randn({kProjDim, kExperts}).requires_grad_(true);
  torch::NoGradGuard no_grad;
  const FusedGate gate = FusedCosineGate(both, kProjDim, keys, torch::Tensor(),
                                         torch::tensor(kColumnExpert, torch::kInt64), false);
  EXPECT_FALSE(gate.gated.requires_grad());
  EXPECT_EQ(gate.gated.grad_fn(), nullptr);
  EXPECT_FALSE(gate.clean_probs.defined());
}

TEST(FusedGateTest, SupportsFloatingCpuTensorsOnly) {
  EXPECT_TRUE(FusedGateSupports(torch::zeros({2, 3})));
  EXPECT_TRUE(FusedGateSupports(torch::zeros({2, 3}, torch::kFloat64)));
  EXPECT_FALSE(FusedGateSupports(torch::zeros({2, 3}, torch::kBFloat16)));
}

TEST(FusedGateTest, RejectsAColumnOfAMissingExpert) {
  const torch::Tensor both = torch::randn({3, kProjDim + 2});
  const torch::Tensor keys = torch::randn({kProjDim, 2});
  EXPECT_THROW(FusedCosineGate(both, kProjDim, keys, torch::Tensor(),
                               torch::tensor({0, 5}, torch::kInt64), false),
               c10::Error);
}

}  // namespace
}  // namespace moa
