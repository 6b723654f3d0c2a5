// The expert-mode planner's cost model: each term against a hand computation, on both sides of
// the decision, and the per-expert costs and shapes it reads from real MoA layers.
#include <cmath>

#include <gtest/gtest.h>

#include "moa/expert_planner.h"

namespace moa {
namespace {

// Equal up to rounding of the sums (the hand values are exact decimals).
#define EXPECT_CLOSE(actual, expected) EXPECT_NEAR(actual, expected, 1e-12 * std::abs(expected))

MachineRates RoundRates() {
  MachineRates rates;
  rates.link_bytes_per_s = 1e9;
  rates.all_to_all_bytes_per_s = 1e9;
  rates.latency_s = 1e-5;
  rates.flops_per_s = 1e9;
  rates.update_s_per_parameter = 1e-9;
  return rates;
}

// Many tokens and two small experts (ranks 10 and 20 between 10 and 20 features), dp 1 x ep 2:
// moving the tokens costs more than all-reducing the small gradients, so replication wins.
TEST(ExpertPlannerTest, ManyTokensAndSmallExpertsStayReplicated) {
  ExpertLayerShape shape;
  shape.in_features = 10;
  shape.out_features = 20;
  shape.tokens_per_rank = 100;
  shape.top_k = 1;
  shape.expert_parameters = {300, 600};
  shape.expert_flops_per_token = {600, 1200};
  const ExpertModeEstimate e = EstimateExpertModes(shape, 1, 2, {0, 1}, RoundRates());
  // Replicated: 50 tokens per expert, 3 passes: 3 * (50 * 600 + 50 * 1200) / 1e9.
  EXPECT_CLOSE(e.replicated_compute_s, 2.7e-4);
  // 900 parameters of 4 bytes in a ring over 2 ranks: 2 * 1/2 * 3600 / 1e9 + latency.
  EXPECT_CLOSE(e.replicated_gradient_bytes, 3600);
  EXPECT_CLOSE(e.replicated_gradient_s, 3.6e-6 + 1e-5);
  EXPECT_CLOSE(e.replicated_update_s, 9e-7);
  // Sharded: the busiest holder runs expert 1 for both ranks' 50 tokens: 3 * 2 * 50 * 1200 / 1e9.
  EXPECT_CLOSE(e.sharded_compute_s, 3.6e-4);
  // Half of the 100 tokens cross, there and back, forward and backward: 2 * 50 * 30 * 4 bytes,
  // plus eight latencies (four payloads, four count exchanges).
  EXPECT_CLOSE(e.exchange_bytes, 12000);
  EXPECT_CLOSE(e.sharded_exchange_s, 1.2e-5 + 8e-5);
  // One replica per expert (dp = 1): no gradient all-reduce; the holder updates 600 parameters.
  EXPECT_CLOSE(e.sharded_gradient_s, 0);
  EXPECT_CLOSE(e.sharded_update_s, 6e-7);
  EXPECT_NEAR(e.replicated_s(), 2.845e-4, 1e-12);
  EXPECT_NEAR(e.sharded_s(), 4.526e-4, 1e-12);
  EXPECT_FALSE(e.choose_sharded());
  EXPECT_EQ(e.Describe().rfind("replicated:", 0), 0u) << e.Describe();
}

// Four tokens and four large experts (100 000 parameters each), dp 2 x ep 2: all-reducing and
// updating every expert on every rank costs more than sending four tokens, so sharding wins.
TEST(ExpertPlannerTest, FewTokensAndLargeExpertsAreSharded) {
  ExpertLayerShape shape;
  shape.in_features = 100;
  shape.out_features = 100;
  shape.tokens_per_rank = 4;
  shape.top_k = 1;
  shape.expert_parameters = {100000, 100000, 100000, 100000};
  shape.expert_flops_per_token = {2e5, 2e5, 2e5, 2e5};
  const ExpertModeEstimate e = EstimateExpertModes(shape, 2, 2, {0, 1, 0, 1}, RoundRates());
  EXPECT_CLOSE(e.replicated_compute_s, 3 * 4 * 2e5 / 1e9);
  EXPECT_CLOSE(e.replicated_gradient_s, 2.0 * 3 / 4 * 1.6e6 / 1e9 + 1e-5);
  EXPECT_CLOSE(e.replicated_update_s, 4e-4);
  EXPECT_CLOSE(e.sharded_compute_s, 3 * 2 * 2 * 1 * 2e5 / 1e9);
  EXPECT_CLOSE(e.exchange_bytes, 2 * 2 * 200 * 4);
  // The holder's two experts (800 000 bytes) all-reduced over their 2 replicas.
  EXPECT_CLOSE(e.sharded_gradient_bytes, 8e5);
  EXPECT_CLOSE(e.sharded_gradient_s, 8e5 / 1e9 + 1e-5);
  EXPECT_CLOSE(e.sharded_update_s, 2e-4);
  EXPECT_NEAR(e.replicated_s(), 5.21e-3, 1e-12);
  EXPECT_NEAR(e.sharded_s(), 3.4932e-3, 1e-12);
  EXPECT_TRUE(e.choose_sharded());
  EXPECT_EQ(e.Describe().rfind("sharded:", 0), 0u) << e.Describe();
  // With SWAD every rank copies the 200 000 parameters it does not hold after each step:
  // 800 000 bytes plus a latency per expert, 0.84 ms, still cheaper than replication.
  shape.refresh_every_step = true;
  const ExpertModeEstimate refreshed = EstimateExpertModes(shape, 2, 2, {0, 1, 0, 1}, RoundRates());
  EXPECT_CLOSE(refreshed.sharded_refresh_s, 8e5 / 1e9 + 4 * 1e-5);
  EXPECT_NEAR(refreshed.sharded_s(), 3.4932e-3 + 8.4e-4, 1e-12);
  EXPECT_TRUE(refreshed.choose_sharded());
  // Two layers together: every term adds.
  ExpertModeEstimate both = e;
  both += refreshed;
  EXPECT_CLOSE(both.sharded_s(), e.sharded_s() + refreshed.sharded_s());
  EXPECT_CLOSE(both.replicated_s(), e.replicated_s() + refreshed.replicated_s());
  EXPECT_CLOSE(both.exchange_bytes, 2 * e.exchange_bytes);
}

// The rank holding the fewest experts sends the largest share of its tokens away: with experts
// placed {0, 0, 0, 1} that rank keeps 1 in 4, so 3/4 of its 100 tokens cross.
TEST(ExpertPlannerTest, ExchangeCountsTheRankWithFewestExperts) {
  ExpertLayerShape shape;
  shape.in_features = 10;
  shape.out_features = 20;
  shape.tokens_per_rank = 100;
  shape.top_k = 2;
  shape.expert_parameters = {30, 30, 30, 90};
  shape.expert_flops_per_token = {60, 60, 60, 180};
  const ExpertModeEstimate e = EstimateExpertModes(shape, 1, 2, {0, 0, 0, 1}, RoundRates());
  // 100 tokens x 2 choices x 3/4 remote, there and back twice: 2 x 150 x 30 features x 4 bytes.
  EXPECT_CLOSE(e.exchange_bytes, 36000);
  // Under bf16 autocast the tokens and outputs cross in bfloat16: half the bytes. Gradients stay
  // float32.
  shape.exchange_element_bytes = 2;
  const ExpertModeEstimate bf16 = EstimateExpertModes(shape, 1, 2, {0, 0, 0, 1}, RoundRates());
  EXPECT_CLOSE(bf16.exchange_bytes, 18000);
  EXPECT_CLOSE(bf16.sharded_exchange_s, 1.8e-5 + 8e-5);
  EXPECT_CLOSE(bf16.replicated_gradient_bytes, e.replicated_gradient_bytes);
}

TEST(ExpertPlannerTest, LayerShapesAndCosts) {
  auto context = std::make_shared<RoutingContext>();
  MoaConfig lora;  // ranks 1, 2, 4, 8
  MoaAdapterImpl lora_layer(16, 24, lora, 0, context, nullptr);
  const ExpertLayerShape shape = ShapeOf(lora_layer, 50);
  EXPECT_EQ(shape.tokens_per_rank, 50);
  EXPECT_EQ(shape.in_features, 16);
  EXPECT_EQ(shape.out_features, 24);
  // A rank-r LoRA expert: r x 16 down, 24 x r up; 2 r (16 + 24) FLOPs per token.
  EXPECT_EQ(shape.expert_parameters, (std::vector<int64_t>{40, 80, 160, 320}));
  EXPECT_EQ(shape.expert_flops_per_token, (std::vector<double>{80, 160, 320, 640}));
  EXPECT_EQ(shape.exchange_element_bytes, 4);
  EXPECT_EQ(ShapeOf(lora_layer, 50, /*bf16=*/true).exchange_element_bytes, 2);
  MoaConfig kron;
  kron.expert = "kronecker";
  kron.phm_dim = 8;
  auto rules = std::make_shared<KroneckerRulesImpl>(8, false);
  MoaAdapterImpl kron_layer(16, 24, kron, 0, context, rules);
  // Kronecker experts apply a whole 16 x 24 update matrix, whatever their inner rank.
  for (int64_t e = 0; e < 4; ++e) EXPECT_CLOSE(ExpertFlopsPerToken(kron_layer, e), 2 * 16 * 24);
}

}  // namespace
}  // namespace moa
