// The ViT against timm's VisionTransformer on the same weights (written by Python, read by our
// safetensors reader), the parameter counts against independent PyTorch modules, the fused
// attention against its formula, and the block Linears' bias inside the matrix product.
#include <ATen/record_function.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>

#include "common/safetensors.h"
#include "moa/autocast.h"
#include "moa/models.h"
#include "moa/peft.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

struct VitCase {
  int img, patch, in_chans, dim, depth, heads;
  double mlp_ratio;
  bool norm_pre;
  double eps;
  int classes;
};

class VitParityTest : public ::testing::TestWithParam<VitCase> {};

TEST_P(VitParityTest, ForwardEqualsTimm) {
  const VitCase c = GetParam();
  test::TempDir dir;
  const std::string path = dir.File("vit.safetensors");
  char args[256];
  std::snprintf(args, sizeof(args), "%s %d %d %d %d %d %d %g %d %g %d", path.c_str(), c.img,
                c.patch, c.in_chans, c.dim, c.depth, c.heads, c.mlp_ratio, c.norm_pre ? 1 : 0,
                c.eps, c.classes);
  ASSERT_EQ(test::RunPython("vit_reference.py", args), 0);
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile file, ReadSafetensors(path));

  VisionTransformerImpl model(ViTOptions()
                                  .img_size(c.img)
                                  .patch_size(c.patch)
                                  .in_chans(c.in_chans)
                                  .dim(c.dim)
                                  .depth(c.depth)
                                  .heads(c.heads)
                                  .mlp_ratio(c.mlp_ratio)
                                  .norm_pre(c.norm_pre)
                                  .norm_eps(c.eps)
                                  .num_classes(c.classes));
  // Every parameter name of ours is a timm name, and every timm tensor is one of ours.
  int64_t copied = 0;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model.named_parameters()) {
      auto it = file.tensors.find(p.key());
      ASSERT_NE(it, file.tensors.end()) << "timm has no tensor named " << p.key();
      ASSERT_EQ(it->second.sizes(), p.value().sizes()) << p.key();
      p.value().copy_(it->second);
      ++copied;
    }
  }
  EXPECT_EQ(copied + 3, static_cast<int64_t>(file.tensors.size()))
      << "timm's state dict has tensors the model lacks";
  EXPECT_EQ(CountParameters(model).total(), file.tensors.at("__num_params__").item<int64_t>());
  model.eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = model.forward(file.tensors.at("__input__"));
  const torch::Tensor expected = file.tensors.at("__logits__");
  ASSERT_EQ(logits.sizes(), expected.sizes());
  EXPECT_LE((logits - expected).abs().max().item<double>(), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, VitParityTest,
                         ::testing::Values(VitCase{28, 7, 1, 64, 2, 4, 2.0, true, 1e-5, 10},
                                           VitCase{32, 8, 3, 48, 3, 3, 4.0, false, 1e-6, 7}),
                         [](const ::testing::TestParamInfo<VitCase>& info) {
                           return "dim" + std::to_string(info.param.dim) +
                                  (info.param.norm_pre ? "_norm_pre" : "_plain");
                         });

TEST(CountsTest, MatchIndependentModulesAndThePaper) {
  test::TempDir dir;
  const std::string log = dir.File("counts.json");
  ASSERT_EQ(test::RunPython("reference_counts.py", "", log), 0);
  std::string output;
  ASSERT_EQ(test::RunShell("cat " + log, &output), 0);
  const nlohmann::json counts = nlohmann::json::parse(output);

  VisionTransformerImpl vit(ViTOptions().norm_pre(true).norm_eps(1e-5).num_classes(7));
  const ParameterCounts c = CountParameters(vit);
  EXPECT_EQ(c.backbone, counts["vit_b16_clip_backbone"].get<int64_t>());
  // The reference's CLIP ViT-B/16 (docs/method.md, Backbone and head).
  EXPECT_EQ(c.backbone, 85799424);
  EXPECT_EQ(c.head, 768 * 7 + 7);

  MnistCnnImpl cnn(1, 10);
  const ParameterCounts cc = CountParameters(cnn);
  EXPECT_EQ(cc.backbone, counts["mnist_cnn"].get<int64_t>());
  EXPECT_EQ(cc.head, 128 * 10 + 10);
}

TEST(MnistCnnTest, FeaturesAre128PerImage) {
  MnistCnnImpl cnn(1, 10);
  const torch::Tensor x = torch::randn({4, 1, 28, 28});
  EXPECT_EQ(cnn.Features(x).sizes(), (std::vector<int64_t>{4, 128}));
  EXPECT_EQ(cnn.forward(x).sizes(), (std::vector<int64_t>{4, 10}));
}

}  // namespace
}  // namespace moa

namespace moa {
namespace {

// The fused attention (at::scaled_dot_product_attention) against the formula written out:
// softmax(q k^T / sqrt(head_dim)) v per head, with the module's own qkv and proj weights. The
// tolerance is float32 rounding over a 16-wide dot product and a softmax; a wrong scale (for
// example 1/head_dim) or heads mixed up in the reshape changes the output by orders more.
TEST(AttentionTest, FusedAttentionEqualsTheFormula) {
  torch::manual_seed(3);
  const int64_t batch = 3, tokens = 17, dim = 64, heads = 4, head_dim = dim / heads;
  Attention attention(dim, heads);
  const torch::Tensor x = torch::randn({batch, tokens, dim});
  torch::Tensor fused, expected;
  {
    torch::NoGradGuard no_grad;
    attention->qkv->bias.normal_();  // zero at initialisation; a bias must count too
    attention->proj->bias.normal_();
    fused = attention->forward(x);
    const auto& qkv = attention->qkv;
    const auto& proj = attention->proj;
    const torch::Tensor all = torch::matmul(x, qkv->weight.t()) + qkv->bias;  // B, N, 3C
    std::vector<torch::Tensor> per_head;
    for (int64_t h = 0; h < heads; ++h) {
      const torch::Tensor q = all.narrow(2, 0 * dim + h * head_dim, head_dim);
      const torch::Tensor k = all.narrow(2, 1 * dim + h * head_dim, head_dim);
      const torch::Tensor v = all.narrow(2, 2 * dim + h * head_dim, head_dim);
      const torch::Tensor scores = torch::matmul(q, k.transpose(1, 2)) / std::sqrt(head_dim);
      per_head.push_back(torch::matmul(torch::softmax(scores, -1), v));
    }
    expected = torch::matmul(torch::cat(per_head, 2), proj->weight.t()) + proj->bias;
  }
  EXPECT_TRUE(torch::allclose(fused, expected, /*rtol=*/1e-5, /*atol=*/1e-6))
      << "largest difference " << (fused - expected).abs().max().item<double>();
}

// The ATen operators a forward pass calls on this thread, outermost and nested alike.
std::vector<std::string>& RecordedOperators() {
  static thread_local std::vector<std::string> names;
  return names;
}

std::vector<std::string> OperatorsOf(const std::function<void()>& run) {
  RecordedOperators().clear();
  // Removed again even when `run` throws, so no later test on this thread records.
  struct Recording {
    at::CallbackHandle handle = at::addThreadLocalCallback(
        at::RecordFunctionCallback([](const at::RecordFunction& fn)
                                       -> std::unique_ptr<at::ObserverContext> {
          RecordedOperators().push_back(fn.name());
          return nullptr;
        }).scopes({at::RecordScope::FUNCTION}));
    ~Recording() { at::removeCallback(handle); }
  } recording;
  run();
  return RecordedOperators();
}

// A block's Linear on (batch, tokens, width) activations adds its bias inside the matrix product
// (ATen's linear: addmm, the bias in the GEMM's epilogue, as PyTorch's nn.Linear), in fp32 and
// under bf16 autocast, rather than multiplying and then adding the bias in place (the C++
// frontend's functional linear, whose broadcasting float add cost a sixth of a bf16 ViT-B/16 step
// on an H100). The output is x W^T + b either way.
TEST(AdaptableLinearTest, BiasIsAddedInsideTheMatrixProduct) {
  torch::manual_seed(4);
  AdaptableLinear linear(AdaptableLinearOptions(32, 48));
  {
    torch::NoGradGuard no_grad;
    linear->bias.normal_();
  }
  const torch::Tensor x = torch::randn({2, 5, 32});
  for (const bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16 autocast" : "fp32");
    torch::Tensor y;
    const std::vector<std::string> ops = OperatorsOf([&] {
      AutocastScope autocast(torch::kCPU, bf16);
      y = linear->forward(x);
    });
    const auto called = [&ops](const char* name) {
      return std::find(ops.begin(), ops.end(), name) != ops.end();
    };
    EXPECT_TRUE(called("aten::addmm"));
    EXPECT_FALSE(called("aten::add_"));
    EXPECT_FALSE(called("aten::add"));
    EXPECT_EQ(y.scalar_type(), bf16 ? torch::kBFloat16 : torch::kFloat32);
    const torch::Tensor expected = torch::matmul(x, linear->weight.t()) + linear->bias;
    // bfloat16 keeps 8 bits of mantissa: a 32-term dot product of unit normals is off by a few
    // hundredths at most.
    const double tolerance = bf16 ? 0.1 : 1e-5;
    EXPECT_LT((y.to(torch::kFloat32) - expected).abs().max().item<double>(), tolerance);
  }
}

}  // namespace
}  // namespace moa
