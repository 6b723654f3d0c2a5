// `moa export --format peft` read by the real Hugging Face PEFT on the real timm ViT: a LoRA run
// on a timm backbone, exported, loaded with PeftModel.from_pretrained, gives per-image logits
// equal to `moa predict` on the same image files (tests/python/peft_roundtrip.py). Methods PEFT
// cannot express are refused.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <absl/strings/str_split.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/safetensors.h"
#include "tests/data/image_fixtures.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

std::string ExportMoa() { return test::BinaryDir() + "/moa"; }

// tiny_images.ini widened to two blocks: IMG PATCH DIM DEPTH HEADS MLP_RATIO NORM_PRE EPS.
constexpr char kShape[] = "224 56 64 2 4 2 1 1e-5";
constexpr char kShapeOptions[] =
    " --model.dim=64 --model.depth=2 --model.heads=4 --model.norm_eps=1e-5";

// image -> logits by class name, from `moa predict --logits`.
std::map<std::string, std::map<std::string, double>> PredictedLogits(const std::string& csv) {
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);
  const std::vector<std::string> header = absl::StrSplit(line, ',');
  std::map<std::string, std::map<std::string, double>> logits;
  while (std::getline(in, line)) {
    const std::vector<std::string> fields = absl::StrSplit(line, ',');
    for (size_t c = 0; c < header.size(); ++c) {
      if (header[c].rfind("logit:", 0) == 0)
        logits[fields[0]][header[c].substr(6)] = std::stod(fields[c]);
    }
  }
  return logits;
}

TEST(PeftExportTest, PeftOnTimmGivesTheLogitsOfMoaPredict) {
  test::TempDir dir;
  data::test::WriteImageFolder(dir.File("data"), {"a", "b", "c"}, {"x", "y", "z"}, 4);
  ASSERT_EQ(test::RunPython("peft_roundtrip.py",
                            "backbone " + dir.File("backbone.safetensors") + " " + kShape),
            0);
  const std::string config = " --config " + test::SourceDir() +
                             "/configs/tiny_images.ini --data.data_dir=" + dir.File("data") +
                             kShapeOptions +
                             " --model.backbone=" + dir.File("backbone.safetensors");
  std::string out;
  // alpha 4 at rank 2: PEFT must scale by lora_alpha / r = 2; LoRA on four Linears per block.
  ASSERT_EQ(test::RunShell(ExportMoa() + " train" + config +
                               " --adapter.alpha=4 --adapter.targets=qkv,proj,fc1,fc2 "
                               "--optim.lr=1e-2 --train.steps=10 --output.dir=" +
                               dir.File("run"),
                           &out),
            0)
      << out;
  // Export and predict read the run's own configuration, as a user would.
  const std::string run_config = " --config " + dir.File("run/config.ini");
  const std::string adapters = " --adapters " + dir.File("run/checkpoints/selected.safetensors");
  ASSERT_EQ(test::RunShell(ExportMoa() + " export" + run_config + adapters +
                               " --format peft --output " + dir.File("peft"),
                           &out),
            0)
      << out;

  std::ifstream config_file(dir.File("peft/adapter_config.json"));
  const nlohmann::json peft = nlohmann::json::parse(config_file);
  EXPECT_EQ(peft["peft_type"], "LORA");
  EXPECT_EQ(peft["r"], 2);
  EXPECT_DOUBLE_EQ(peft["lora_alpha"].get<double>(), 4.0);
  EXPECT_EQ(peft["target_modules"].size(), 8u);
  EXPECT_EQ(peft["modules_to_save"], nlohmann::json::array({"head"}));
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile weights,
                           ReadSafetensors(dir.File("peft/adapter_model.safetensors")));
  EXPECT_EQ(weights.tensors.size(), 8u * 2 + 2);
  const torch::Tensor& b = weights.tensors.at("base_model.model.blocks.1.attn.qkv.lora_B.weight");
  EXPECT_EQ(b.sizes(), torch::IntArrayRef({192, 2}));
  // Trained: the LoRA update is far from zero, so a wrong scale or layout would show.
  EXPECT_GT(b.abs().max().item<double>(), 1e-3);

  // Every third image of the folder, all three environments.
  std::vector<std::string> images;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir.File("data"))) {
    if (entry.is_regular_file()) images.push_back(entry.path().string());
  }
  std::sort(images.begin(), images.end());
  std::ofstream list(dir.File("images.txt"));
  size_t listed = 0;
  for (size_t i = 0; i < images.size(); i += 3, ++listed) list << images[i] << "\n";
  list.close();
  ASSERT_EQ(listed, 12u);
  ASSERT_EQ(test::RunShell(ExportMoa() + " predict" + run_config + adapters + " --images " +
                               dir.File("images.txt") + " --logits --output " + dir.File("moa.csv"),
                           &out),
            0)
      << out;
  ASSERT_EQ(test::RunPython("peft_roundtrip.py",
                            "logits " + dir.File("backbone.safetensors") + " " + dir.File("peft") +
                                " " + dir.File("images.txt") + " " + dir.File("peft.json") + " " +
                                kShape + " 3",
                            dir.File("peft.log")),
            0)
      << ReadFile(dir.File("peft.log")).value_or("");
  std::ifstream peft_out(dir.File("peft.json"));
  const nlohmann::json reference = nlohmann::json::parse(peft_out);
  const auto predicted = PredictedLogits(dir.File("moa.csv"));
  ASSERT_EQ(predicted.size(), listed);
  ASSERT_EQ(reference.size(), listed);
  // Tolerance: float sums in another order (measured 2.4e-7; moa's resize matches PIL's, see
  // tests/data).
  double worst = 0, spread = 0;
  for (const auto& [image, row] : predicted) {
    ASSERT_TRUE(reference.contains(image)) << image;
    const std::vector<std::string> classes = {"x", "y", "z"};
    for (size_t c = 0; c < classes.size(); ++c) {
      const double theirs = reference[image][c].get<double>();
      worst = std::max(worst, std::abs(row.at(classes[c]) - theirs));
      spread = std::max(spread, std::abs(theirs));
    }
  }
  std::printf("PEFT + timm vs moa predict: max |logit difference| %.3g (logits up to %.3g)\n",
              worst, spread);
  EXPECT_LT(worst, 1e-5);
  EXPECT_GT(spread, 0.1);
}

TEST(PeftExportTest, MethodsPeftCannotExpressAreRefusedNamingTheWayOut) {
  test::TempDir dir;
  // phm_dim 8: Kronecker blocks that split tiny.ini's width-32 Linears.
  const std::string config = " --config " + test::SourceDir() + "/configs/tiny.ini --moa.phm_dim=8";
  std::string out;
  for (const char* method : {"moa", "kadaptation"}) {
    EXPECT_EQ(
        test::RunShell(ExportMoa() + " export" + config + " --adapter.method=" + method +
                           " --format peft --adapters x.safetensors --output " + dir.File("peft"),
                       &out),
        1)
        << out;
    EXPECT_NE(out.find("adapter.method = " + std::string(method) + " has no PEFT equivalent"),
              std::string::npos)
        << out;
    EXPECT_NE(out.find("moa export --merge"), std::string::npos) << out;
  }
  EXPECT_EQ(test::RunShell(ExportMoa() + " export" + config +
                               " --format onnx --adapters x.safetensors --output y",
                           &out),
            2)
      << out;
  EXPECT_NE(out.find("--format onnx: the one format is peft"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(dir.File("peft")));
}

}  // namespace
}  // namespace moa
