// The Mixture-of-Adapters layer against an independent PyTorch reference written from
// docs/method.md (tests/python/moa_reference.py, mode `layer`): output, auxiliary loss and the
// gradients of both with respect to the input, the router and every expert, for LoRA and
// Kronecker experts with top-1 and top-2 routing; LoRA experts through both the stacked
// computation (the default) and the routed one.
//
// The layer runs in training mode (the auxiliary loss exists only there) with router noise and
// Kronecker dropout off and no capacity, so the computation is deterministic. Where moa departs
// on purpose from the reference's code (docs/method.md, Quirks), the reference follows the
// documented formula: top_k is honoured (the reference's code always takes the top-1), the load's
// threshold is the k-th largest probability (Q7), sigma = 1/E (the reference's 1/4, since E = 4
// here) and Kronecker experts take their ranks from moa.ranks (1, 2, 4, 8, the reference's list).
// LoRA experts inside the layer use scale 1, as the reference does (Q9).
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "common/safetensors.h"
#include "moa/moa_layer.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

constexpr int64_t kInFeatures = 32;
constexpr int64_t kOutFeatures = 48;
constexpr int64_t kPhmDim = 8;  // Kronecker: in = 8 x 4, out = 8 x 6

struct ReferenceCase {
  std::string expert;
  int64_t top_k;
  bool renormalize;
  std::string dispatch = "auto";  // auto: stacked for LoRA experts, routed for Kronecker ones
};

std::string Describe(const ReferenceCase& c) {
  return c.expert + "_top" + std::to_string(c.top_k) + (c.renormalize ? "_renormalized" : "") +
         (c.dispatch == "auto" ? "" : "_" + c.dispatch);
}

void PrintTo(const ReferenceCase& c, std::ostream* os) { *os << Describe(c); }

std::string CaseName(const ::testing::TestParamInfo<ReferenceCase>& info) {
  return Describe(info.param);
}

// Tolerance for one float32 tensor against its float64 reference, relative to the tensor's
// largest entry. Every entry is a short chain of float32 sums and products (at most a few
// thousand terms: the router's 32-wide projection and 16-wide cosine, an expert's 32-wide and
// rank-wide products or the 8-slice Kronecker sum, and for gradients sums over 72 tokens and 48
// outputs), each rounding by at most 2^-24 ~ 6e-8 of the magnitudes involved; such errors add up
// like sqrt(terms) times that, about 1e-6 of the largest entry (measured: at most 9e-7 over all
// cases). 1e-5 leaves a factor of ten for other platforms' summation orders and is still far
// below any real mistake: a wrong gate, scale, index or missing gradient path moves entries by
// 1e-3 of the largest or more.
constexpr double kRelativeTolerance = 1e-5;

void ExpectMatches(const std::string& what, const torch::Tensor& actual,
                   const torch::Tensor& expected) {
  ASSERT_TRUE(actual.defined()) << what;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const torch::Tensor want = expected.to(torch::kFloat64);
  const double scale = want.abs().max().item<double>();
  const double error = (actual.to(torch::kFloat64) - want).abs().max().item<double>();
  EXPECT_LE(error, kRelativeTolerance * scale + 1e-12)
      << what << ": largest difference " << error << ", largest reference entry " << scale;
}

class MoaLayerReferenceTest : public ::testing::TestWithParam<ReferenceCase> {};

TEST_P(MoaLayerReferenceTest, OutputsAuxLossAndGradientsMatch) {
  const ReferenceCase& param = GetParam();
  torch::manual_seed(11);
  MoaConfig config;
  config.expert = param.expert;
  config.ranks = {1, 2, 4, 8};
  config.top_k = param.top_k;
  config.renormalize = param.renormalize;
  config.proj_dim = 16;
  config.noise = false;
  config.kron_dropout = 0;
  config.capacity_factor = 0;
  config.aux_weight = 0.3;
  config.phm_dim = kPhmDim;
  config.dispatch = param.dispatch;
  auto rules = std::make_shared<KroneckerRulesImpl>(kPhmDim, /*with_unused_rule0=*/false);
  auto layer = std::make_shared<MoaAdapterImpl>(kInFeatures, kOutFeatures, config, /*layer=*/0,
                                                std::make_shared<RoutingContext>(), rules);
  AdaptableLinear linear(AdaptableLinearOptions(kInFeatures, kOutFeatures));
  linear->set_adapter(layer);
  linear->weight.requires_grad_(false);
  linear->bias.requires_grad_(false);

  // Every tensor the reference reads, with the trainable ones (and the input) listed for
  // gradients. LoRA's B and the shared bias start at zero, and the rule at +-0.01, which would
  // hide the experts behind W0 x: all of them get magnitudes comparable to the frozen path.
  std::vector<std::pair<std::string, torch::Tensor>> trainable;
  for (const auto& item : layer->named_parameters())
    trainable.emplace_back(item.key(), item.value());
  if (param.expert == "kronecker") {
    trainable.emplace_back("phm_rule.rule1_left", rules->rule1_left);
    trainable.emplace_back("phm_rule.rule1_right", rules->rule1_right);
  }
  {
    torch::NoGradGuard no_grad;
    linear->weight.normal_(0, 0.1);
    linear->bias.normal_(0, 0.1);
    layer->router->temperature.fill_(1.2);
    for (auto& [name, tensor] : trainable) {
      if (name.find(".B") != std::string::npos || name == "bias") tensor.normal_(0, 0.3);
      if (name.rfind("phm_rule.", 0) == 0) tensor.uniform_(-0.6, 0.6);
    }
  }
  const torch::Tensor x = torch::randn({6, 12, kInFeatures}).requires_grad_(true);
  const torch::Tensor projection = torch::randn({6, 12, kOutFeatures});
  trainable.emplace_back("input", x);

  layer->train();
  const torch::Tensor y = linear->forward(x);
  const torch::Tensor aux = layer->aux_loss();
  ASSERT_TRUE(aux.defined());
  // Every expert must see tokens, or its gradients would be zero on both sides and prove nothing.
  for (int64_t e = 0; e < layer->num_experts(); ++e) {
    EXPECT_GT(layer->last_routing().expert_counts[e].item<int64_t>(), 0) << "expert " << e;
  }
  std::vector<torch::Tensor> inputs;
  for (const auto& item : trainable) inputs.push_back(item.second);
  const auto output_grads = torch::autograd::grad({(y * projection).sum()}, inputs, {},
                                                  /*retain_graph=*/true, /*create_graph=*/false,
                                                  /*allow_unused=*/true);
  const auto aux_grads = torch::autograd::grad({aux}, inputs, {}, /*retain_graph=*/false,
                                               /*create_graph=*/false, /*allow_unused=*/true);

  test::TempDir dir;
  std::vector<std::pair<std::string, torch::Tensor>> written = {
      {"linear.weight", linear->weight.detach()},
      {"linear.bias", linear->bias.detach()},
      {"projection", projection}};
  for (const auto& [name, tensor] : trainable) written.emplace_back(name, tensor.detach());
  MOA_ASSERT_OK(WriteSafetensors(dir.File("in.safetensors"), written,
                                 {{"expert", param.expert},
                                  {"top_k", std::to_string(param.top_k)},
                                  {"renormalize", param.renormalize ? "true" : "false"},
                                  {"aux_weight", std::to_string(config.aux_weight)}}));
  ASSERT_EQ(test::RunPython("moa_reference.py", "layer " + dir.File("in.safetensors") + " " +
                                                    dir.File("out.safetensors")),
            0);
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile ref, ReadSafetensors(dir.File("out.safetensors")));

  // The choice is discrete: with every token's k-th and (k+1)-th probabilities this far apart,
  // float32 rounding cannot change it, and both sides must choose the same experts.
  EXPECT_GT(ref.tensors.at("margin").item<double>(), 1e-4);
  EXPECT_TRUE(torch::equal(layer->last_routing().experts, ref.tensors.at("experts")));
  ExpectMatches("output", y.detach(), ref.tensors.at("output"));
  ExpectMatches("aux loss", aux.detach().reshape({1}), ref.tensors.at("aux"));
  for (size_t i = 0; i < trainable.size(); ++i) {
    const std::string& name = trainable[i].first;
    const torch::Tensor zeros = torch::zeros_like(inputs[i]);
    ExpectMatches("d(output . projection)/d " + name,
                  output_grads[i].defined() ? output_grads[i] : zeros,
                  ref.tensors.at("grad_output." + name));
    ExpectMatches("d(aux)/d " + name, aux_grads[i].defined() ? aux_grads[i] : zeros,
                  ref.tensors.at("grad_aux." + name));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Experts, MoaLayerReferenceTest,
    ::testing::Values(ReferenceCase{"lora", 1, false}, ReferenceCase{"lora", 2, false},
                      ReferenceCase{"kronecker", 1, false}, ReferenceCase{"kronecker", 2, false},
                      ReferenceCase{"lora", 2, true}, ReferenceCase{"lora", 1, false, "routed"},
                      ReferenceCase{"lora", 2, false, "routed"}),
    CaseName);

}  // namespace
}  // namespace moa
