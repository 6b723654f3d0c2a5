// `moa eval`, `predict` and `export` build the model a checkpoint was trained as: without --config
// from the configuration stored in the checkpoint (equal to evaluating with the run's config.ini),
// and a --config that describes another model is refused, naming each key with both values,
// unless the key is set on the command line. Evaluating on other in/out splits of the training
// dataset says so.
#include <algorithm>
#include <filesystem>
#include <string>

#include "launch/checkpoint_config.h"
#include "tests/support/test_support.h"

namespace moa::launch {
namespace {

std::string Moa() { return test::BinaryDir() + "/moa"; }
std::string Tiny() { return test::SourceDir() + "/configs/tiny.ini"; }

// A tiny LoRA run with keys other than tiny.ini's: rank 4, alpha 8, trial seed 1.
std::string TrainRun(const test::TempDir& dir, const std::string& name, const std::string& more) {
  const std::string run = dir.File(name);
  std::string out;
  EXPECT_EQ(
      test::RunShell(Moa() + " train --config " + Tiny() +
                         " --train.steps=3 --train.checkpoint_freq=2 --output.dir=" + run + more,
                     &out),
      0)
      << out;
  return run + "/checkpoints/selected.safetensors";
}

// stdout alone (the score table), and the exit status.
int Table(const std::string& args, std::string* table) {
  return test::RunShell("(" + Moa() + args + " 2>/dev/null)", table);
}

TEST(CheckpointConfigTest, ModelKeysAreWhatEvaluationComputesWith) {
  LaunchConfig config = DefaultConfig();
  std::vector<std::string> keys = ModelKeys(config);
  auto has = [&](const std::string& key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
  };
  for (const char* key : {"model.dim", "model.backbone", "model.num_classes", "adapter.method",
                          "adapter.rank", "adapter.alpha", "adapter.targets", "moa.ranks",
                          "moa.top_k", "moa.router", "moa.renormalize", "moa.phm_dim"}) {
    EXPECT_TRUE(has(key)) << key;
  }
  for (const char* key : {"moa.noise", "moa.aux_loss", "moa.capacity_factor", "moa.dispatch",
                          "moa.kron_dropout", "optim.lr", "data.dataset", "train.seed"}) {
    EXPECT_FALSE(has(key)) << key;
  }
  config.run.model.backbone = "random";
  keys = ModelKeys(config);
  EXPECT_TRUE(has("train.seed")) << "a random backbone's weights come from the seed";
}

TEST(CheckpointConfigTest, CommandsUseTheCheckpointsConfigurationAndRefuseAnotherModel) {
  test::TempDir dir;
  const std::string adapter =
      TrainRun(dir, "run", " --adapter.rank=4 --adapter.alpha=8 --train.trial_seed=1");
  const std::string run = dir.File("run");

  // Without --config: the same scores as with the run's own config.ini.
  std::string stored, own;
  ASSERT_EQ(Table(" eval --adapters " + adapter, &stored), 0) << stored;
  ASSERT_EQ(Table(" eval --config " + run + "/config.ini --adapters " + adapter, &own), 0) << own;
  EXPECT_EQ(stored, own);
  EXPECT_EQ(std::count(stored.begin(), stored.end(), '%'), 12) << "6 domains x in, out\n" << stored;

  // tiny.ini describes rank 2 and alpha 0: refused before any weight is read, both keys named.
  std::string out;
  EXPECT_EQ(test::RunShell(Moa() + " eval --config " + Tiny() + " --adapters " + adapter, &out), 2);
  EXPECT_NE(out.find(adapter + " was trained as another model than " + Tiny() + " describes"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("adapter.rank = 4 there, 2 here"), std::string::npos) << out;
  EXPECT_NE(out.find("adapter.alpha = 8 there, 0 here"), std::string::npos) << out;
  EXPECT_NE(out.find("leave out --config"), std::string::npos) << out;

  // The same keys set on the command line: a deliberate change, accepted; tiny.ini's trial seed
  // (0) makes other in/out splits, which the command says.
  EXPECT_EQ(test::RunShell(Moa() + " eval --config " + Tiny() + " --adapters " + adapter +
                               " --adapter.rank=4 --adapter.alpha=8",
                           &out),
            0)
      << out;
  EXPECT_NE(out.find("note: " + adapter +
                     " was trained on other in/out splits of RotatedFashionMNIST "
                     "(train.trial_seed 1 -> 0): the `out` accuracies below include images it "
                     "trained on"),
            std::string::npos)
      << out;

  // An ensemble member trained as another model than the first: refused, naming it.
  const std::string other = TrainRun(dir, "other", " --train.trial_seed=1");
  EXPECT_EQ(test::RunShell(Moa() + " eval --adapters " + adapter + " " + other, &out), 2);
  EXPECT_NE(out.find(other + " was trained as another model than the first checkpoint's"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("adapter.rank = 2 there, 4 here"), std::string::npos) << out;

  // export without --config; its merged file stores no training configuration, so evaluating it
  // needs one.
  const std::string merged = dir.File("merged.safetensors");
  ASSERT_EQ(
      test::RunShell(Moa() + " export --merge --adapters " + adapter + " --output " + merged, &out),
      0)
      << out;
  EXPECT_TRUE(std::filesystem::exists(merged));
  EXPECT_EQ(test::RunShell(Moa() + " eval --adapters " + merged, &out), 2);
  EXPECT_NE(out.find(merged + " stores no training configuration (moa_config); give the run's "
                              "with --config"),
            std::string::npos)
      << out;
  EXPECT_EQ(test::RunShell(Moa() + " eval --adapters " + dir.File("missing.safetensors"), &out), 2);
  EXPECT_NE(out.find("cannot open " + dir.File("missing.safetensors")), std::string::npos) << out;
}

}  // namespace
}  // namespace moa::launch
