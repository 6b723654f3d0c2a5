// End-to-end runs of the tiny configuration: the run directory and the results.jsonl schema,
// the selected checkpoint, reproducibility, NaN handling, and pretrain -> train.
#include <filesystem>
#include <fstream>

#include "common/files.h"
#include "common/safetensors.h"
#include "launch/options.h"
#include "moa/peft.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_config.h"
#include "trainer/selection.h"
#include "trainer/trainer.h"

namespace moa::trainer {
namespace {

TEST(TrainTest, RunDirectoryAndResultsSchema) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  MOA_ASSERT_OK_AND_ASSIGN(RunSummary summary, Train(test::TinyConfig(run, {"output.save=all"})));
  for (const char* file : {"config.ini", "env.json", "results.jsonl", "selection.txt", "done",
                           "checkpoints/selected.safetensors", "checkpoints/selected.json"}) {
    EXPECT_TRUE(std::filesystem::exists(run + "/" + file)) << file;
  }
  const auto records = test::ReadJsonLines(run + "/results.jsonl");
  // steps = 12, checkpoint_freq = 5: evaluations after steps 0, 5, 10 and the last, 11.
  ASSERT_EQ(records.size(), 4u);
  const int64_t expected_steps[] = {0, 5, 10, 11};
  for (size_t r = 0; r < records.size(); ++r) {
    const nlohmann::json& rec = records[r];
    EXPECT_EQ(rec["step"].get<int64_t>(), expected_steps[r]);
    // 120 images per domain: 24 out, 96 in; epoch = step x batch_size / smallest `in`.
    EXPECT_DOUBLE_EQ(rec["epoch"].get<double>(), expected_steps[r] * 8.0 / 96.0);
    for (int e = 0; e < 6; ++e) {
      for (const std::string split : {"in", "out"}) {
        const std::string key = "env" + std::to_string(e) + "_" + split;
        ASSERT_TRUE(rec.contains(key + "_acc")) << key;
        ASSERT_TRUE(rec.contains(key + "_loss")) << key;
        const double correct = rec[key + "_acc"].get<double>() * (split == "in" ? 96 : 24);
        EXPECT_NEAR(correct, std::round(correct), 1e-9) << "accuracy is not a count / total";
        EXPECT_GT(rec[key + "_loss"].get<double>(), 0);
      }
    }
    for (const char* key : {"loss", "step_time", "mem_gb", "images_per_s"}) {
      ASSERT_TRUE(rec.contains(key)) << key;
      EXPECT_GT(rec[key].get<double>(), 0) << key;
    }
    EXPECT_EQ(rec["args"]["dataset"], "RotatedFashionMNIST");
    EXPECT_EQ(rec["args"]["test_envs"], nlohmann::json::array({5}));
    EXPECT_EQ(rec["args"]["trial_seed"], 0);
    EXPECT_EQ(rec["args"]["output_dir"], run);
    EXPECT_DOUBLE_EQ(rec["hparams"]["lr"].get<double>(), 1e-3);
    EXPECT_EQ(rec["hparams"]["batch_size"], 8);
    EXPECT_EQ(rec["hparams"]["rank"], 2);
  }
  // The selected checkpoint is the one saved at the step training-domain validation picks.
  MOA_ASSERT_OK_AND_ASSIGN(auto selections, SelectModels(records, {0, 1, 2, 3, 4}, {5}));
  const int64_t step = selections[0].step;
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile selected,
                           ReadSafetensors(run + "/checkpoints/selected.safetensors"));
  MOA_ASSERT_OK_AND_ASSIGN(
      SafetensorsFile at_step,
      ReadSafetensors(run + "/checkpoints/step" + std::to_string(step) + ".safetensors"));
  ASSERT_EQ(selected.tensors.size(), at_step.tensors.size());
  for (const auto& [name, t] : selected.tensors)
    EXPECT_TRUE(torch::equal(t, at_step.tensors.at(name))) << name;
  EXPECT_EQ(selected.metadata.at("moa_step"), std::to_string(step));
  // The file holds trainable tensors only: LoRA on qkv and proj of 2 blocks (A and B) and the head.
  EXPECT_EQ(selected.tensors.size(), 2u * 2u * 2u + 2u);
  MOA_ASSERT_OK_AND_ASSIGN(std::string table, ReadFile(run + "/selection.txt"));
  EXPECT_EQ(table, summary.selection_table);
  EXPECT_NE(table.find("training-domain validation"), std::string::npos);
}

TEST(TrainTest, SameSeedGivesByteIdenticalLosses) {
  test::TempDir dir;
  MOA_ASSERT_OK(Train(test::TinyConfig(dir.File("a"))));
  MOA_ASSERT_OK(Train(test::TinyConfig(dir.File("b"))));
  MOA_ASSERT_OK(Train(test::TinyConfig(dir.File("c"), {"train.seed=1"})));
  const auto a = test::ReadJsonLines(dir.File("a/results.jsonl"));
  const auto b = test::ReadJsonLines(dir.File("b/results.jsonl"));
  const auto c = test::ReadJsonLines(dir.File("c/results.jsonl"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t r = 0; r < a.size(); ++r) {
    for (auto it = a[r].begin(); it != a[r].end(); ++it) {
      if (it.key().find("loss") == std::string::npos && it.key().find("acc") == std::string::npos)
        continue;
      EXPECT_EQ(it.value().dump(), b[r][it.key()].dump()) << it.key() << " at record " << r;
    }
  }
  EXPECT_NE(a.back()["loss"].dump(), c.back()["loss"].dump()) << "the seed does not change the run";
}

TEST(TrainTest, MoaRunRecordsRouterStatistics) {
  test::TempDir dir;
  MOA_ASSERT_OK(Train(test::TinyConfig(
      dir.File("moa"), {"adapter.method=moa", "moa.proj_dim=16", "moa.aux_loss=true",
                        "moa.capacity_factor=0.5", "moa.ranks=1,4"})));
  const auto records = test::ReadJsonLines(dir.File("moa/results.jsonl"));
  ASSERT_EQ(records.size(), 4u);
  // Steps 1..5 are the second interval: 5 training forwards of 5 domains x 8 images x 17 tokens.
  const nlohmann::json& router = records[1]["router"];
  ASSERT_EQ(router.size(), 4u);  // qkv and proj of 2 blocks
  for (size_t layer = 0; layer < router.size(); ++layer) {
    const auto& entry = router[layer];
    EXPECT_EQ(entry["layer"], static_cast<int64_t>(layer));
    ASSERT_EQ(entry["share"].size(), 2u);
    const double kept = entry["share"][0].get<double>() + entry["share"][1].get<double>();
    const int64_t assignments = 5 * 5 * 8 * 17;
    // capacity = ceil(0.5 x 680 / 2) = 170 per expert and forward: at least 340 of 680 dropped.
    EXPECT_GE(entry["dropped"].get<int64_t>(), 5 * 340);
    EXPECT_NEAR(kept, 1.0 - entry["dropped"].get<double>() / assignments, 1e-9);
    EXPECT_GT(entry["aux_loss"].get<double>(), 0);
  }
}

TEST(TrainTest, NonFiniteLossStopsTheRunWithAClearError) {
  test::TempDir dir;
  auto result = Train(test::TinyConfig(dir.File("nan"), {"optim.lr=1e30"}));
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("training loss is"), std::string::npos)
      << result.status();
  EXPECT_FALSE(std::filesystem::exists(dir.File("nan/done")));
}

TEST(TrainTest, PretrainedBackboneLoadsFrozen) {
  test::TempDir dir;
  RunConfig pre = test::TinyConfig(
      dir.File("pre"),
      {"data.dataset=FashionMNIST", "data.test_envs=", "adapter.method=full", "train.steps=3"});
  MOA_ASSERT_OK(Pretrain(pre));
  const std::string backbone = dir.File("pre/backbone.safetensors");
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile file, ReadSafetensors(backbone));
  RunConfig config = test::TinyConfig(dir.File("train"), {"model.backbone=" + backbone});
  MOA_ASSERT_OK_AND_ASSIGN(data::DatasetInfo info, data::LookupDataset("RotatedFashionMNIST"));
  MOA_ASSERT_OK_AND_ASSIGN(auto model, BuildModel(config, info));
  int64_t backbone_tensors = 0;
  for (auto& p : model->named_parameters()) {
    if (GroupOf(p.key()) != ParameterGroup::kBackbone) continue;
    ++backbone_tensors;
    EXPECT_TRUE(torch::equal(p.value(), file.tensors.at(p.key()))) << p.key();
    EXPECT_FALSE(p.value().requires_grad()) << p.key();
  }
  EXPECT_EQ(backbone_tensors, static_cast<int64_t>(file.tensors.size()));
  MOA_ASSERT_OK(Train(config));
}

}  // namespace
}  // namespace moa::trainer
