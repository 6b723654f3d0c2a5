// The `moa` command line as a user runs it: help, `moa info` on every shipped configuration
// (image-folder ones on a folder written here), and the exit codes and messages of bad
// invocations.
#include <filesystem>
#include <fstream>

#include "common/files.h"
#include "common/version.h"
#include "launch/hparams.h"
#include "launch/options.h"
#include "tests/data/image_fixtures.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

std::string Moa() { return test::BinaryDir() + "/moa"; }

TEST(CommandsTest, HelpListsCommandsAndOptions) {
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " --help", &out), 0);
  for (const char* word : {"train", "pretrain", "info", "--optim.lr", "--adapter.rank"}) {
    EXPECT_NE(out.find(word), std::string::npos) << word;
  }
  ASSERT_EQ(test::RunShell(Moa() + " train --help", &out), 0);
  EXPECT_NE(out.find("--data.test_envs"), std::string::npos);
  EXPECT_NE(out.find("the dataset's default, 5001; DomainNet 15001) (default: -1)"),
            std::string::npos)
      << out;
  EXPECT_EQ(test::RunShell(Moa() + " frobnicate", &out), 2);
  EXPECT_NE(out.find("unknown command 'frobnicate'"), std::string::npos);
  EXPECT_EQ(test::RunShell(Moa() + " train stray", &out), 2);
  EXPECT_NE(out.find("stray"), std::string::npos);
}

TEST(CommandsTest, InfoWorksOnEveryShippedConfig) {
  // ImageFolder configurations leave data.data_dir to the user; info scans it for the classes.
  test::TempDir images;
  data::test::WriteImageFolder(images.path(), {"a", "b"}, {"x", "y"}, 1);
  int configs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(test::SourceDir() + "/configs")) {
    if (entry.path().extension() != ".ini") continue;
    ++configs;
    std::string out;
    MOA_ASSERT_OK_AND_ASSIGN(std::string text, ReadFile(entry.path().string()));
    const bool image_folder = text.find("dataset = ImageFolder") != std::string::npos;
    EXPECT_EQ(test::RunShell(Moa() + " info --config " + entry.path().string() +
                                 (image_folder ? " --data.data_dir=" + images.path() : ""),
                             &out),
              0)
        << entry.path() << "\n"
        << out;
    EXPECT_NE(out.find("trainable"), std::string::npos) << entry.path();
    if (image_folder) {
      EXPECT_NE(out.find("(2 classes)"), std::string::npos) << out;
    }
  }
  EXPECT_GE(configs, 3);
}

TEST(CommandsTest, InfoCountsViTB16LoRA) {
  std::string out;
  ASSERT_EQ(test::RunShell(
                Moa() + " info --data.dataset=PACS --adapter.method=lora --adapter.rank=2", &out),
            0)
      << out;
  EXPECT_NE(out.find("85,799,424"), std::string::npos) << out;
  EXPECT_NE(out.find("110,592"), std::string::npos) << out;
  EXPECT_NE(out.find("5,383"), std::string::npos) << out;  // 768 x 7 + 7
}

TEST(CommandsTest, PaperRowConfigsHaveThePapersCounts) {
  // Trainable parameters without the head (docs/method.md, Parameter counts and Quirks Q17).
  const std::pair<const char*, const char*> rows[] = {
      {"vitb16_full.ini", "85,799,424"},    {"vitb16_attention.ini", "28,348,416"},
      {"vitb16_lora.ini", "110,592"},       {"vitb16_kadaptation.ini", "146,432"},
      {"vitb16_lora_moa.ini", "1,463,814"}, {"vitb16_kadaptation_moa.ini", "1,494,022"},
  };
  for (const auto& [file, count] : rows) {
    std::string out;
    ASSERT_EQ(
        test::RunShell(Moa() + " info --config " + test::SourceDir() + "/configs/" + file, &out), 0)
        << out;
    EXPECT_NE(out.find("(" + std::string(count) + " without the head)"), std::string::npos)
        << file << "\n"
        << out;
    EXPECT_NE(out.find("85,799,424"), std::string::npos) << file;  // the CLIP ViT-B/16 backbone
  }
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " info --config " + test::SourceDir() +
                               "/configs/vitb16_lora_moa.ini --adapter.blocks=last:2",
                           &out),
            0);
  EXPECT_NE(out.find("(487,938 without the head)"), std::string::npos) << out;
}

// `moa train --train.hparams_seed=2` trains draw 2 (launch/hparams.h, as a sweep's job of that
// draw; sweep_test.cc compares the two configurations whole): the run's config.ini holds the draw,
// and the log names it.
TEST(CommandsTest, TrainWithAHparamsSeedTrainsThatDraw) {
  const std::string tiny = test::SourceDir() + "/configs/tiny.ini";
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " train --config " + tiny +
                               " --train.hparams_seed=2 --train.trial_seed=1 --optim.lr=0.002"
                               " --train.steps=1 --output.dir=" +
                               dir.File("run"),
                           &out),
            0)
      << out;
  auto written = launch::LoadLaunchConfig(dir.File("run/config.ini"), {});
  MOA_ASSERT_OK(written);
  auto expected = launch::LoadLaunchConfig(tiny, {});
  MOA_ASSERT_OK(expected);
  const auto draw = launch::DrawHparams(expected->run, 1, 2, 1, {"optim.lr"});
  ASSERT_EQ(draw.size(), 4u);
  std::vector<std::string> overrides = {"--optim.lr=0.002", "--train.steps=1"};
  for (const auto& [key, value] : draw) {
    overrides.push_back("--" + key + "=" + value);
    EXPECT_NE(out.find(key + "=" + value), std::string::npos) << key << "\n" << out;
  }
  expected = launch::LoadLaunchConfig(tiny, overrides);
  MOA_ASSERT_OK(expected);
  EXPECT_EQ(written->run.optim.weight_decay, expected->run.optim.weight_decay);
  EXPECT_EQ(written->run.data.batch_size, expected->run.data.batch_size);
  EXPECT_EQ(written->run.adapter.rank, expected->run.adapter.rank);
  EXPECT_EQ(written->run.adapter.alpha, expected->run.adapter.alpha);
  EXPECT_EQ(written->run.optim.lr, 0.002);
  EXPECT_EQ(written->run.train.hparams_seed, 2);
  // Resuming takes the run's configuration as written, even on another number of ranks (where a
  // new draw could round the batch size differently): nothing is drawn again.
  const std::string run = dir.File("run");
  std::vector<std::pair<std::string, std::string>> drawn;
  auto resumed = launch::LoadConfigWithDraw(
      run + "/config.ini", {"--train.resume=" + run, "--output.dir=" + run}, 3, &drawn);
  MOA_ASSERT_OK(resumed);
  EXPECT_TRUE(drawn.empty());
  EXPECT_EQ(launch::ToIni(*resumed),
            launch::ToIni(*launch::LoadLaunchConfig(
                run + "/config.ini", {"--train.resume=" + run, "--output.dir=" + run})));
}

// Keys a command sets itself are refused from the user rather than silently replaced: --resume
// continues the run in its own folder, and pretrain trains the whole model from scratch.
TEST(CommandsTest, KeysTheCommandSetsItselfAreRefused) {
  const std::string tiny = test::SourceDir() + "/configs/tiny.ini";
  std::string out;
  EXPECT_EQ(test::RunShell(Moa() + " train --resume /nowhere --output.dir=/tmp/elsewhere", &out),
            2);
  EXPECT_NE(out.find("--output.dir cannot be given with --resume"), std::string::npos) << out;
  EXPECT_EQ(test::RunShell(Moa() + " pretrain --config " + tiny + " --adapter.method=lora", &out),
            2);
  EXPECT_NE(out.find("--adapter.method cannot be given to pretrain"), std::string::npos) << out;
  EXPECT_EQ(test::RunShell(Moa() + " pretrain --config " + tiny + " --model.backbone x", &out), 2);
  EXPECT_NE(out.find("--model.backbone cannot be given to pretrain"), std::string::npos) << out;
  EXPECT_EQ(test::RunShell(Moa() + " pretrain --resume /nowhere --output.dir=/tmp/elsewhere", &out),
            2);
  EXPECT_NE(out.find("--output.dir cannot be given with --resume"), std::string::npos) << out;
}

// A command without an argument it cannot do without is a usage error (exit 2) naming it.
TEST(CommandsTest, MissingRequiredArgumentsAreUsageErrors) {
  const std::string tiny = " --config " + test::SourceDir() + "/configs/tiny.ini";
  const std::pair<std::string, std::string> cases[] = {
      {" eval" + tiny, "moa eval: --adapters is required"},
      {" predict" + tiny + " --images x --output y.csv", "moa predict: --adapters is required"},
      {" predict" + tiny + " --adapters a.safetensors --output y.csv",
       "moa predict: --images is required"},
      {" predict" + tiny + " --adapters a.safetensors --images x",
       "moa predict: --output is required"},
  };
  for (const auto& [args, message] : cases) {
    std::string out;
    EXPECT_EQ(test::RunShell(Moa() + args, &out), 2) << args;
    EXPECT_NE(out.find(message), std::string::npos) << out;
  }
}

TEST(CommandsTest, BadConfigurationExitsWithTwoAndNamesTheKey) {
  std::string out;
  EXPECT_EQ(test::RunShell(Moa() + " train --config " + test::SourceDir() +
                               "/configs/tiny.ini --train.steps=0",
                           &out),
            2);
  EXPECT_NE(out.find("train.steps"), std::string::npos) << out;
}

std::string Tiny() { return test::SourceDir() + "/configs/tiny.ini"; }

// A ViT-B/16 paper row ships without weights: train, eval and export stop before touching data
// and say how to get CLIP's; `model.backbone = random` (tiny.ini) trains on a random backbone.
TEST(CommandsTest, FrozenViTBackboneMustBeSaid) {
  test::TempDir dir;
  const std::string vitb16 = test::SourceDir() + "/configs/vitb16_lora.ini";
  for (const std::string& command :
       {std::string("train"), "eval --adapters " + dir.File("a.safetensors"),
        "export --merge --adapters " + dir.File("a.safetensors") + " --output " +
            dir.File("m.safetensors")}) {
    std::string out;
    EXPECT_EQ(test::RunShell(Moa() + " " + command + " --config " + vitb16 +
                                 " --output.dir=" + dir.File("run"),
                             &out),
              2)
        << command << "\n"
        << out;
    EXPECT_NE(out.find("model.backbone is empty, but adapter.method = lora trains on a frozen "
                       "backbone: set model.backbone to a CLIP ViT-B/16 weights file"),
              std::string::npos)
        << command << "\n"
        << out;
    EXPECT_NE(out.find("or model.backbone = random for a random frozen backbone (configuration " +
                       vitb16 + ")"),
              std::string::npos)
        << out;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.File("run")));

  std::string out;
  ASSERT_EQ(test::RunShell(
                "env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY " + Moa() + " train --config " + Tiny() +
                    " --train.steps=2 --train.checkpoint_freq=2 --output.dir=" + dir.File("random"),
                &out),
            0)
      << out;
  EXPECT_NE(out.find("backbone: random initialisation (model.backbone = random)"),
            std::string::npos)
      << out;
  EXPECT_TRUE(std::filesystem::exists(dir.File("random/done")));
  // Training restarted itself with OpenMP's short spin (no wait setting was given).
  std::ifstream env_file(dir.File("random/env.json"));
  const nlohmann::json env = nlohmann::json::parse(env_file);
  EXPECT_EQ(env["openmp_wait"], "GOMP_SPINCOUNT=1000") << env.dump(2);
  // The malloc that serves the run is the one the build linked (tcmalloc unless configured off):
  // a link line that lost the library would leave glibc's here.
  EXPECT_EQ(env["allocator"], LinkedAllocator()) << env.dump(2);
  // A setting of the user's is kept as given.
  ASSERT_EQ(
      test::RunShell(
          "env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=PASSIVE " + Moa() + " train --config " + Tiny() +
              " --train.steps=1 --train.checkpoint_freq=1 --output.dir=" + dir.File("passive"),
          &out),
      0)
      << out;
  std::ifstream passive_file(dir.File("passive/env.json"));
  EXPECT_EQ(nlohmann::json::parse(passive_file)["openmp_wait"], "OMP_WAIT_POLICY=PASSIVE");
  // Pretraining trains every parameter from a random start: no backbone to say.
  ASSERT_EQ(test::RunShell(Moa() + " pretrain --config " + vitb16 +
                               " --data.dataset=RotatedFashionMNIST --data.data_dir= "
                               "--data.source=test --data.max_per_domain=16 --data.test_envs=5 "
                               "--data.batch_size=2 --model.img_size=28 --model.patch_size=7 "
                               "--model.dim=16 --model.depth=1 --model.heads=2 --train.steps=1 "
                               "--train.checkpoint_freq=1 --output.dir=" +
                               dir.File("pretrain"),
                           &out),
            0)
      << out;
  EXPECT_TRUE(std::filesystem::exists(dir.File("pretrain/backbone.safetensors")));
  // Its run folder's config.ini has no backbone (method full); asked for adapters on it, the empty
  // value is refused as anywhere else (only an adapter run's own folder predating
  // `model.backbone = random` reads it as random).
  ASSERT_TRUE(std::filesystem::is_directory(dir.File("pretrain/checkpoints")));
  EXPECT_EQ(test::RunShell(Moa() + " train --config " + dir.File("pretrain/config.ini") +
                               " --adapter.method=lora --output.dir=" + dir.File("on_pretrain"),
                           &out),
            2)
      << out;
  EXPECT_NE(out.find("model.backbone is empty, but adapter.method = lora"), std::string::npos)
      << out;
}

// Every command reads `--flag=value` and `--flag value` alike. A bad configuration value (exit 2,
// the key named) shows that --config and the key were both read.
TEST(CommandsTest, EveryCommandTakesBothValueForms) {
  for (const char* command : {"train", "pretrain", "info", "eval", "export"}) {
    // eval and export cannot start without their own arguments (usage errors, checked first).
    const std::string name = command;
    const std::string adapters = name == "eval"     ? " --adapters a.safetensors"
                                 : name == "export" ? " --merge --adapters a.safetensors --output m"
                                                    : "";
    for (const std::string& args :
         {" --config=" + Tiny() + " --train.steps 0", " --config " + Tiny() + " --train.steps=0"}) {
      std::string out;
      EXPECT_EQ(test::RunShell(Moa() + " " + command + args + adapters, &out), 2)
          << command << args;
      EXPECT_NE(out.find("moa " + std::string(command) + ": train.steps: must be -1"),
                std::string::npos)
          << command << args << "\n"
          << out;
    }
  }
  test::TempDir dir;
  for (const std::string& args : {" --input_dir=" + dir.File("none") + " --format=markdown",
                                  " --input_dir " + dir.File("none") + " --format markdown"}) {
    std::string out;
    EXPECT_EQ(test::RunShell(Moa() + " collect" + args, &out), 1) << out;
    EXPECT_NE(out.find("--input_dir " + dir.File("none") + " is not a directory"),
              std::string::npos)
        << out;
  }
  for (const std::string& args :
       {" --config=" + Tiny() +
            " --data.test_envs=0,5 --n_hparams=1 --n_trials=1 --output.dir=" + dir.File("sweep"),
        " --config " + Tiny() + " --data.test_envs 0,5 --n_hparams 1 --n_trials 1 --output.dir " +
            dir.File("sweep")}) {
    std::string out;
    ASSERT_EQ(test::RunShell(Moa() + " sweep list" + args, &out), 0) << out;
    EXPECT_NE(out.find("2 jobs: 0 done, 0 incomplete, 2 not launched"), std::string::npos) << out;
  }
  for (const std::string& args : {" --data.data_dir=" + dir.File("none") + " --data.workers=1",
                                  " --data.data_dir " + dir.File("none") + " --data.workers 1"}) {
    std::string out;
    EXPECT_EQ(test::RunShell(Moa() + " data check" + args, &out), 1) << out;
    EXPECT_NE(out.find("does not exist"), std::string::npos) << out;
  }
}

// `moa export --output=x` was "unknown option --output" before the one parser.
TEST(CommandsTest, ExportWritesToOutputGivenWithEquals) {
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(
                Moa() + " train --config " + Tiny() +
                    " --train.steps=2 --train.checkpoint_freq=2 --output.dir=" + dir.File("run"),
                &out),
            0)
      << out;
  const std::string adapter = dir.File("run/checkpoints/selected.safetensors");
  ASSERT_EQ(test::RunShell(Moa() + " export --config=" + Tiny() + " --merge --adapters=" + adapter +
                               " --output=" + dir.File("merged.safetensors"),
                           &out),
            0)
      << out;
  EXPECT_TRUE(std::filesystem::exists(dir.File("merged.safetensors"))) << out;
  EXPECT_NE(out.find("wrote " + dir.File("merged.safetensors")), std::string::npos) << out;
}

TEST(CommandsTest, UnknownOptionsAndMissingValuesNameTheCommand) {
  const std::pair<std::string, std::string> cases[] = {
      {" export --outputs x", "moa export: unknown option --outputs"},
      {" train --adapters a", "moa train: unknown option --adapters"},
      {" info --config", "moa info: --config needs a value"},
      {" eval --adapters", "moa eval: --adapters needs a value"},
      {" collect --output.dir x", "moa collect: unknown option --output.dir"},
      {" data check --data.workers many", "moa data check: --data.workers needs an integer"},
      {" sweep list --output.dir /tmp/x --n_trials=0", "moa sweep: --n_trials needs an integer"},
      {" train --train.step=3", "moa train: unknown option --train.step"},
  };
  for (const auto& [args, message] : cases) {
    std::string out;
    EXPECT_EQ(test::RunShell(Moa() + args, &out), 2) << args << "\n" << out;
    EXPECT_NE(out.find(message), std::string::npos) << args << "\n" << out;
  }
}

TEST(CommandsTest, EveryCommandsHelpListsItsFlags) {
  const std::pair<std::string, std::vector<std::string>> cases[] = {
      {"train", {"--config FILE", "--resume RUN_DIR", "--optim.lr", "[slurm]"}},
      {"pretrain", {"--config FILE", "--model.arch"}},
      {"info", {"--config FILE", "--adapter.method"}},
      {"eval", {"--adapters FILE [FILE ...]", "--eval.batch_size"}},
      {"export", {"--merge", "--output FILE", "--adapters FILE [FILE ...]", "--data.data_dir"}},
      {"data check",
       {"--data.dataset NAME", "--data.data_dir DIR", "--data.workers N", "--data_dir",
        "now --data.data_dir"}},
      {"sweep",
       {"--output.dir DIR", "--data.test_envs SPEC", "--adapter.method METHOD", "--n_hparams N",
        "--launcher L", "--output_dir", "now --output.dir", "--slurm.partition",
        "Swept hyper-parameters"}},
      {"collect", {"--input_dir DIR", "--format F"}},
  };
  for (const auto& [command, texts] : cases) {
    std::string out;
    ASSERT_EQ(test::RunShell(Moa() + " " + command + " --help", &out), 0) << command;
    for (const std::string& text : texts) {
      EXPECT_NE(out.find(text), std::string::npos) << command << ": " << text << "\n" << out;
    }
  }
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " export --help", &out), 0);
  EXPECT_EQ(out.find("  --resume RUN_DIR"), std::string::npos) << out;  // a flag of train only
}

}  // namespace
}  // namespace moa
