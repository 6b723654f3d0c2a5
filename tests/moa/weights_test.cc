// A model's weights through safetensors files: the frozen backbone and the trainable tensors
// round-trip exactly, and a backbone of another shape is refused naming the tensors that differ.
#include "moa/weights.h"
#include "moa/models.h"
#include "moa/peft.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

TEST(WeightsTest, BackboneAndTrainableRoundTrip) {
  test::TempDir dir;
  const auto options =
      ViTOptions().img_size(8).patch_size(4).in_chans(1).dim(16).depth(2).heads(2).num_classes(3);
  VisionTransformerImpl a(options), b(options);
  MOA_ASSERT_OK(SaveBackbone(a, dir.File("bb.safetensors")));
  MOA_ASSERT_OK(LoadBackbone(b, dir.File("bb.safetensors")));
  for (auto& p : a.named_parameters()) {
    if (GroupOf(p.key()) == ParameterGroup::kBackbone) {
      EXPECT_TRUE(torch::equal(p.value(), b.named_parameters()[p.key()])) << p.key();
    }
  }
  PeftOptions peft;
  MOA_ASSERT_OK(ApplyPeft(a, peft));
  MOA_ASSERT_OK(ApplyPeft(b, peft));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : a.parameters()) p.add_(1.0);
  }
  MOA_ASSERT_OK(SaveTrainable(a, dir.File("ad.safetensors")));
  MOA_ASSERT_OK(LoadTrainable(b, dir.File("ad.safetensors")));
  for (auto& [name, t] : TrainableParameters(a)) {
    EXPECT_TRUE(torch::equal(t, b.named_parameters()[name])) << name;
  }
  // A backbone of another shape is refused with the names that differ.
  VisionTransformerImpl wide(ViTOptions(options).dim(32));
  const absl::Status status = LoadBackbone(wide, dir.File("bb.safetensors"));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("shape mismatch"), std::string::npos) << status;
  EXPECT_NE(status.message().find("blocks.0.attn.qkv.weight"), std::string::npos) << status;
}

}  // namespace
}  // namespace moa
