// `moa eval`, `predict` and `export` build the model a checkpoint was trained as: without --config
// from the configuration stored in the checkpoint (equal to evaluating with the run's config.ini),
// and a --config that describes another model is refused, naming each key with both values,
// unless the key is set on the command line. Evaluating on other in/out splits of the training
// dataset says so.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <torch/torch.h>

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

TEST(CheckpointConfigTest, ModelKeysAreWhatTheMethodEvaluatesWith) {
  LaunchConfig config = DefaultConfig();  // lora on a backbone file
  auto keys = [&] {
    const std::vector<std::string> k = ModelKeys(config);
    return std::set<std::string>(k.begin(), k.end());
  };
  std::set<std::string> lora = keys();
  for (const char* key : {"model.dim", "model.depth", "adapter.method", "adapter.rank",
                          "adapter.alpha", "adapter.blocks", "adapter.targets"}) {
    EXPECT_TRUE(lora.count(key)) << key;
  }
  for (const char* key : {"moa.top_k", "moa.phm_dim", "moa.noise", "model.num_classes",
                          "model.backbone", "train.seed", "optim.lr", "data.dataset"}) {
    EXPECT_FALSE(lora.count(key)) << key;
  }
  config.run.model.backbone = "random";
  EXPECT_TRUE(keys().count("train.seed")) << "a random backbone's weights come from the seed";

  config.run.adapter.method = "moa";
  std::set<std::string> moa = keys();
  for (const char* key : {"moa.ranks", "moa.top_k", "moa.router", "moa.proj_dim", "moa.renormalize",
                          "adapter.targets"}) {
    EXPECT_TRUE(moa.count(key)) << key;
  }
  for (const char* key : {"adapter.rank", "adapter.alpha", "moa.phm_dim", "moa.noise",
                          "moa.aux_loss", "moa.capacity_factor", "moa.dispatch", "moa.fp32_gate"}) {
    EXPECT_FALSE(moa.count(key)) << key;
  }
  config.run.moa.expert = "kronecker";
  EXPECT_TRUE(keys().count("moa.phm_dim"));

  config.run.adapter.method = "full";  // every weight is in the checkpoint
  std::set<std::string> full = keys();
  EXPECT_FALSE(full.count("train.seed"));
  EXPECT_FALSE(full.count("adapter.rank"));
  EXPECT_TRUE(full.count("model.dim"));
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
  // predict and export check the same way.
  EXPECT_EQ(test::RunShell(Moa() + " predict --config " + Tiny() + " --adapters " + adapter +
                               " --images " + dir.File("none") + " --output " + dir.File("p.csv"),
                           &out),
            2);
  EXPECT_NE(out.find("moa predict: " + adapter + " was trained as another model"),
            std::string::npos)
      << out;
  EXPECT_EQ(test::RunShell(Moa() + " export --config " + Tiny() + " --merge --adapters " + adapter +
                               " --output " + dir.File("m.safetensors"),
                           &out),
            2);
  EXPECT_NE(out.find("moa export: " + adapter + " was trained as another model"), std::string::npos)
      << out;
  EXPECT_FALSE(std::filesystem::exists(dir.File("m.safetensors")));
  // A key a LoRA model does not use may differ.
  EXPECT_EQ(test::RunShell(Moa() + " eval --config " + run + "/config.ini --adapters " + adapter +
                               " --moa.top_k=2 --moa.router=linear",
                           &out),
            0)
      << out;

  // The same keys set on the command line: a deliberate change, accepted; tiny.ini's trial seed
  // (0) makes other in/out splits, which the command says.
  EXPECT_EQ(test::RunShell(Moa() + " eval --config " + Tiny() + " --adapters " + adapter +
                               " --adapter.rank=4 --adapter.alpha=8",
                           &out),
            0)
      << out;
  EXPECT_NE(out.find("note: " + adapter +
                     " was trained on other in/out splits of RotatedFashionMNIST "
                     "(train.trial_seed 1 -> 0): the `out` accuracies include images it "
                     "trained on"),
            std::string::npos)
      << out;

  // An ensemble member trained as another model than the first: refused, naming it.
  const std::string other = TrainRun(dir, "other", " --train.trial_seed=1");
  EXPECT_EQ(test::RunShell(Moa() + " eval --adapters " + adapter + " " + other, &out), 2);
  EXPECT_NE(out.find(other + " was trained as another model than " + adapter +
                     " (the ensemble's first checkpoint): adapter.rank = 2 there, 4 here"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("the checkpoints of an ensemble must be trained as one model"),
            std::string::npos)
      << out;

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
  // A missing checkpoint is the same error (exit 1) with and without --config.
  for (const std::string& config : {std::string(), " --config " + run + "/config.ini"}) {
    EXPECT_EQ(test::RunShell(Moa() + " eval --adapters " + dir.File("missing.safetensors") + config,
                             &out),
              1);
    EXPECT_NE(out.find("cannot open " + dir.File("missing.safetensors")), std::string::npos) << out;
  }
}

// How the training run was laid out is not the evaluation's: a checkpoint of a run on a GPU
// (its stored parallel.device = cuda, written here into a copy's metadata with the Python
// safetensors package) evaluates on a machine without one, to the same scores.
TEST(CheckpointConfigTest, ProcessKeysOfTheTrainingRunAreNotUsed) {
  test::TempDir dir;
  const std::string adapter = TrainRun(dir, "run", "");
  const std::string gpu = dir.File("gpu.safetensors");
  std::ofstream(dir.File("to_cuda.py"))
      << "import sys\n"
         "from safetensors import safe_open\n"
         "from safetensors.torch import save_file\n"
         "with safe_open(sys.argv[1], 'pt') as f:\n"
         "    meta = f.metadata()\n"
         "    tensors = {k: f.get_tensor(k) for k in f.keys()}\n"
         "text = meta['moa_config']\n"
         "meta['moa_config'] = text.replace('\\ndevice = auto\\n', '\\ndevice = cuda\\n')\n"
         "assert meta['moa_config'] != text\n"
         "save_file(tensors, sys.argv[2], metadata=meta)\n";
  std::string out;
  ASSERT_EQ(
      test::RunShell(test::PythonPath() + " " + dir.File("to_cuda.py") + " " + adapter + " " + gpu,
                     &out),
      0)
      << out;
  std::string original, moved;
  ASSERT_EQ(Table(" eval --adapters " + adapter, &original), 0) << original;
  ASSERT_EQ(Table(" eval --adapters " + gpu, &moved), 0) << moved;
  EXPECT_EQ(moved, original);
  if (!torch::cuda::is_available()) {
    EXPECT_NE(test::RunShell(Moa() + " eval --adapters " + gpu + " --parallel.device=cuda", &out),
              0)
        << "the key, given, is used";
  }
}

}  // namespace
}  // namespace moa::launch
