// Loading CLIP ViT-B/16 checkpoints written by timm and open_clip (random weights, created at
// test time by the real libraries): names mapped, extra tensors ignored and counted, features
// equal to the PyTorch forward to 1e-4; a PyTorch pickle loads the same; wrong files are refused.
#include "moa/pretrained.h"
#include "common/safetensors.h"
#include "moa/models.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

class ClipImportTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ClipImportTest, FeaturesEqualPyTorch) {
  const std::string scheme = GetParam();
  test::TempDir dir;
  const std::string prefix = dir.File(scheme);
  ASSERT_EQ(test::RunPython("clip_reference.py", scheme + " " + prefix), 0);
  VisionTransformerImpl model(ViTOptions().norm_pre(true).norm_eps(1e-5).num_classes(7));
  MOA_ASSERT_OK_AND_ASSIGN(ImportReport report,
                           LoadPretrainedBackbone(model, prefix + ".safetensors"));
  EXPECT_EQ(report.scheme, scheme);
  // patch weight (no bias), cls, pos; norm_pre weight and bias; 12 tensors in each of 12 blocks;
  // the final norm.
  EXPECT_EQ(report.loaded, 3 + 2 + 12 * 12 + 2);
  // timm: head.weight and head.bias; open_clip: the text tower, logit_scale and visual.proj.
  if (scheme == "timm") {
    EXPECT_EQ(report.ignored, 2);
  } else {
    EXPECT_GT(report.ignored, 100);
  }
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile io, ReadSafetensors(prefix + "_io.safetensors"));
  model.eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor features = model.Features(io.tensors.at("input"));
  EXPECT_LE((features - io.tensors.at("features")).abs().max().item<double>(), 1e-4);
  // The same weights through LibTorch's reader of PyTorch zip pickles.
  VisionTransformerImpl again(ViTOptions().norm_pre(true).norm_eps(1e-5).num_classes(7));
  MOA_ASSERT_OK(LoadPretrainedBackbone(again, prefix + ".pt"));
  for (auto& p : model.named_parameters()) {
    if (p.key().rfind("head.", 0) != 0) {
      EXPECT_TRUE(torch::equal(p.value(), again.named_parameters()[p.key()])) << p.key();
    }
  }
  // The converter script (for pickles LibTorch cannot read) gives the same tensors.
  std::string out;
  ASSERT_EQ(test::RunShell(test::PythonPath() + " " + test::SourceDir() +
                               "/scripts/convert_to_safetensors.py " + prefix + ".pt " + prefix +
                               "_converted.safetensors",
                           &out),
            0)
      << out;
  VisionTransformerImpl converted(ViTOptions().norm_pre(true).norm_eps(1e-5).num_classes(7));
  MOA_ASSERT_OK(LoadPretrainedBackbone(converted, prefix + "_converted.safetensors"));
  EXPECT_TRUE(torch::equal(converted.named_parameters()["blocks.11.mlp.fc2.weight"],
                           model.named_parameters()["blocks.11.mlp.fc2.weight"]));
  // A model of another shape is refused with the names at fault.
  VisionTransformerImpl small(ViTOptions().dim(384).heads(6).norm_pre(true).num_classes(7));
  auto refused = LoadPretrainedBackbone(small, prefix + ".safetensors");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("shape mismatch"), std::string::npos);
  EXPECT_NE(refused.status().message().find("blocks.0.attn.qkv.weight"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Schemes, ClipImportTest, ::testing::Values("timm", "open_clip"));

TEST(ImportTest, MissingVisionTensorIsNamed) {
  std::map<std::string, torch::Tensor> tensors = {
      {"visual.conv1.weight", torch::zeros({8, 3, 4, 4})}};
  std::map<std::string, torch::Tensor> mapped;
  const ImportReport report = MapCheckpointNames(tensors, &mapped);
  EXPECT_EQ(report.scheme, "open_clip");
  EXPECT_EQ(mapped.count("patch_embed.proj.weight"), 1u);
  test::TempDir dir;
  MOA_ASSERT_OK(WriteSafetensors(dir.File("partial.safetensors"),
                                 {{"visual.conv1.weight", torch::zeros({8, 3, 4, 4})}}));
  VisionTransformerImpl model(
      ViTOptions().img_size(8).patch_size(4).dim(8).depth(1).heads(2).norm_pre(true).num_classes(
          2));
  auto result = LoadPretrainedBackbone(model, dir.File("partial.safetensors"));
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("missing"), std::string::npos);
  EXPECT_NE(result.status().message().find("blocks.0.attn.qkv.weight"), std::string::npos);
}

}  // namespace
}  // namespace moa
