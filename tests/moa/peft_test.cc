// PEFT: LoRA's initial identity and its formula, where gradients go in every mode, injection
// rules, and the paper's parameter counts.
#include <cmath>

#include "moa/peft.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

ViTOptions Small() {
  return ViTOptions().img_size(16).patch_size(4).in_chans(1).dim(32).depth(4).heads(4).num_classes(
      5);
}

TEST(LoraTest, AtInitialisationTheOutputIsUnchanged) {
  torch::manual_seed(3);
  VisionTransformerImpl model(Small());
  model.eval();
  const torch::Tensor x = torch::randn({2, 1, 16, 16});
  const torch::Tensor before = model.forward(x).detach();
  PeftOptions peft;
  peft.rank = 4;
  peft.targets = "qkv,proj,fc1,fc2";
  MOA_ASSERT_OK(ApplyPeft(model, peft));
  EXPECT_TRUE(torch::equal(model.forward(x), before));
}

// The reference's init (docs/method.md): A ~ Normal(0, std 1/r), B = 0. With n = r x 2048 draws
// the sample mean has standard error (1/r)/sqrt(n) and the sample standard deviation about
// (1/r)/sqrt(2n); five standard errors separate std 1/r from 1/sqrt(r), from 1/r^2 and from
// Kaiming's uniform, and a kurtosis near 3 (Normal; a uniform has 1.8) rules out the uniform.
TEST(LoraTest, InitIsNormalWithStdOneOverRankAndBZero) {
  torch::manual_seed(5);
  for (int64_t rank : {1, 4, 8}) {
    LoraImpl lora(LoraOptions(2048, 64, rank));
    const double n = static_cast<double>(lora.A.numel());
    const double sigma = 1.0 / static_cast<double>(rank);
    const double mean = lora.A.mean().item<double>();
    const double std = lora.A.std().item<double>();
    EXPECT_NEAR(mean, 0.0, 5 * sigma / std::sqrt(n)) << "rank " << rank;
    EXPECT_NEAR(std, sigma, 5 * sigma / std::sqrt(2 * n)) << "rank " << rank;
    const double kurtosis = ((lora.A - mean).pow(4).mean() / std::pow(std, 4)).item<double>();
    EXPECT_NEAR(kurtosis, 3.0, 5 * std::sqrt(24.0 / n)) << "rank " << rank;
    EXPECT_TRUE(torch::equal(lora.B, torch::zeros({64, rank}))) << "rank " << rank;
  }
}

TEST(LoraTest, DeltaIsScaleTimesBAx) {
  torch::manual_seed(0);
  LoraOptions options(6, 5, 3);
  options.scale(2.5);
  LoraImpl lora(options);
  EXPECT_TRUE(torch::equal(lora.B, torch::zeros({5, 3})));
  {
    torch::NoGradGuard no_grad;
    lora.B.normal_();
  }
  const torch::Tensor x = torch::randn({4, 6});
  const torch::Tensor expected = 2.5 * torch::mm(torch::mm(x, lora.A.t()), lora.B.t());
  EXPECT_TRUE(torch::allclose(lora.Delta(x), expected, 1e-5, 1e-6));
}

TEST(LoraTest, GradientsReachOnlyAdaptersAndHead) {
  torch::manual_seed(1);
  VisionTransformerImpl model(Small());
  PeftOptions peft;
  peft.rank = 2;
  peft.blocks = "every_other";
  MOA_ASSERT_OK(ApplyPeft(model, peft));
  // One optimisation-free backward after making B non-zero so A gets gradient too.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model.named_parameters()) {
      if (p.key().find(".lora.B") != std::string::npos) p.value().normal_();
    }
  }
  const torch::Tensor loss = model.forward(torch::randn({3, 1, 16, 16})).pow(2).sum();
  loss.backward();
  int adapters = 0;
  for (auto& p : model.named_parameters()) {
    const ParameterGroup g = GroupOf(p.key());
    const bool should_train = g == ParameterGroup::kAdapter || g == ParameterGroup::kHead;
    EXPECT_EQ(p.value().requires_grad(), should_train) << p.key();
    if (should_train) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
    } else {
      EXPECT_FALSE(p.value().grad().defined()) << p.key();
    }
    if (g == ParameterGroup::kAdapter) {
      ++adapters;
      // every_other on 4 blocks: blocks 0 and 2 only.
      EXPECT_TRUE(p.key().rfind("blocks.0.", 0) == 0 || p.key().rfind("blocks.2.", 0) == 0)
          << p.key();
    }
  }
  EXPECT_EQ(adapters, 2 * 2 * 2);  // 2 blocks x (qkv, proj) x (A, B)
}

TEST(PeftTest, ModesTrainWhatTheySay) {
  VisionTransformerImpl full(Small());
  PeftOptions peft;
  peft.method = "full";
  MOA_ASSERT_OK(ApplyPeft(full, peft));
  EXPECT_EQ(CountParameters(full).trainable, CountParameters(full).total());

  VisionTransformerImpl attention(Small());
  peft.method = "attention";
  MOA_ASSERT_OK(ApplyPeft(attention, peft));
  // qkv (32x96 + 96) and proj (32x32 + 32) in 4 blocks, plus the head (32x5 + 5).
  EXPECT_EQ(CountParameters(attention).trainable, 4 * (32 * 96 + 96 + 32 * 32 + 32) + 32 * 5 + 5);

  MnistCnnImpl cnn(1, 10);
  peft.method = "lora";
  EXPECT_FALSE(ApplyPeft(cnn, peft).ok());
  peft.method = "prompt";
  EXPECT_FALSE(ApplyPeft(full, peft).ok());
}

TEST(PeftTest, PaperCountsForViTB16) {
  VisionTransformerImpl vit(ViTOptions().norm_pre(true).norm_eps(1e-5).num_classes(7));
  PeftOptions peft;
  peft.rank = 2;
  MOA_ASSERT_OK(ApplyPeft(vit, peft));
  const ParameterCounts c = CountParameters(vit);
  // r (d_in + d_out) per layer: 2 (768 + 2304) for qkv, 2 (768 + 768) for proj, 12 blocks.
  EXPECT_EQ(c.adapters, 12 * (2 * (768 + 2304) + 2 * (768 + 768)));
  EXPECT_EQ(c.adapters, 110592);  // the paper's 0.11M
  EXPECT_EQ(c.trainable, c.adapters + c.head);

  VisionTransformerImpl attn(ViTOptions().norm_pre(true).norm_eps(1e-5).num_classes(7));
  peft.method = "attention";
  MOA_ASSERT_OK(ApplyPeft(attn, peft));
  EXPECT_EQ(CountParameters(attn).trainable - 768 * 7 - 7, 28348416);  // the paper's 28.4M
}

TEST(PeftTest, BlockAndTargetRules) {
  MOA_ASSERT_OK_AND_ASSIGN(auto all, SelectBlocks("all", 4));
  EXPECT_EQ(all, (std::vector<int64_t>{0, 1, 2, 3}));
  MOA_ASSERT_OK_AND_ASSIGN(auto other, SelectBlocks("every_other", 12));
  EXPECT_EQ(other, (std::vector<int64_t>{0, 2, 4, 6, 8, 10}));
  MOA_ASSERT_OK_AND_ASSIGN(auto last, SelectBlocks("last:2", 12));
  EXPECT_EQ(last, (std::vector<int64_t>{10, 11}));
  MOA_ASSERT_OK_AND_ASSIGN(auto list, SelectBlocks("5, 1,5", 12));
  EXPECT_EQ(list, (std::vector<int64_t>{1, 5}));
  EXPECT_FALSE(SelectBlocks("last:13", 12).ok());
  EXPECT_FALSE(SelectBlocks("12", 12).ok());
  EXPECT_FALSE(SelectBlocks("odd", 12).ok());
  MOA_ASSERT_OK_AND_ASSIGN(auto targets, SelectTargets("qkv, fc2"));
  EXPECT_EQ(targets, (std::vector<std::string>{"qkv", "fc2"}));
  auto bad = SelectTargets("qkv,mlp");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("mlp"), std::string::npos);
}

TEST(PeftTest, AlphaScalesLikePeft) {
  VisionTransformerImpl model(Small());
  PeftOptions peft;
  peft.rank = 4;
  peft.alpha = 8;
  MOA_ASSERT_OK(ApplyPeft(model, peft));
  auto lora = std::dynamic_pointer_cast<LoraImpl>(model.blocks()[0]->attn->qkv->adapter());
  ASSERT_NE(lora, nullptr);
  EXPECT_DOUBLE_EQ(lora->options().scale(), 2.0);
}

}  // namespace
}  // namespace moa
