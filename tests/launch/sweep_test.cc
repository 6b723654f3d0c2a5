// `moa sweep` planning: test-environment sets, the job list and its ids, the old spellings,
// ImageFolder's environments read from its folder, hyper-parameter draws and bad arguments.
// The launchers end to end: sweep_launch_test.cc.
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/files.h"
#include "launch/hparams.h"
#include "launch/launchers.h"
#include "launch/options.h"
#include "launch/sweep.h"
#include "parallel/device.h"
#include "tests/data/image_fixtures.h"
#include "tests/launch/sweep_support.h"
#include "tests/support/test_support.h"

namespace moa::launch {
namespace {

namespace fs = std::filesystem;

using test::Moa;
using test::Parse;
using test::Tiny;

std::string Arg(const SweepJob& job, const std::string& key) {
  for (const std::string& a : job.train_args) {
    if (a.rfind("--" + key + "=", 0) == 0) return a.substr(key.size() + 3);
  }
  return "";
}

TEST(SweepTest, TestEnvironmentSets) {
  using Sets = std::vector<std::vector<int64_t>>;
  EXPECT_EQ(*TestEnvSets("single", 3), (Sets{{0}, {1}, {2}}));
  EXPECT_EQ(*TestEnvSets("pairs", 3), (Sets{{0}, {0, 1}, {0, 2}, {1}, {1, 2}, {2}}));
  EXPECT_EQ(TestEnvSets("pairs", 6)->size(), 21u);  // 6 singles and 15 pairs
  EXPECT_EQ(*TestEnvSets("0,5,2+1", 6), (Sets{{0}, {5}, {1, 2}}));
  EXPECT_NE(TestEnvSets("0,6", 6).status().message().find("environment 6 does not exist (0 to 5)"),
            std::string::npos);
  EXPECT_NE(TestEnvSets("zero", 6).status().message().find("'zero' is not one"), std::string::npos);
  EXPECT_NE(TestEnvSets("1+1", 6).status().message().find("names environment 1 twice"),
            std::string::npos);
}

TEST(SweepTest, JobListIdsAndArguments) {
  test::TempDir dir;
  const SweepOptions options =
      Parse({"launch", "--config", Tiny(), "--data.test_envs", "pairs", "--n_hparams", "2",
             "--n_trials", "3", "--output.dir", dir.path(), "--train.steps=4"});
  auto jobs = MakeSweepJobs(options);
  MOA_ASSERT_OK(jobs);
  ASSERT_EQ(jobs->size(), 3u * 21u * 2u);  // trials x (singles + pairs) x draws
  std::set<std::string> ids;
  for (const SweepJob& job : *jobs) {
    EXPECT_EQ(job.id.size(), 32u);
    EXPECT_EQ(job.id.find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_EQ(job.dir, dir.path() + "/" + job.id);
    EXPECT_EQ(job.train_args.back(), "--output.dir=" + job.dir);
    EXPECT_EQ(Arg(job, "train.steps"), "4");
    ids.insert(job.id);
  }
  EXPECT_EQ(ids.size(), jobs->size());
  // DomainBed's order: trial, dataset, method, test envs, draw.
  const SweepJob& first = (*jobs)[0];
  EXPECT_EQ(first.Describe(), "RotatedFashionMNIST lora test_envs=0 hparams_seed=0 trial_seed=0");
  EXPECT_EQ((*jobs)[1].Describe(),
            "RotatedFashionMNIST lora test_envs=0 hparams_seed=1 trial_seed=0");
  EXPECT_EQ((*jobs)[2].Describe(),
            "RotatedFashionMNIST lora test_envs=0,1 hparams_seed=0 trial_seed=0");
  // The run seed is DomainBed's seed_hash(dataset, algorithm, test_envs, hparams_seed,
  // trial_seed) (computed with Python's hashlib).
  EXPECT_EQ(Arg(first, "train.seed"), "315091844");
  // Draw 0 keeps the configuration's values; draw 1 draws lr for lora from 10^U(-4.5, -2.5).
  EXPECT_EQ(Arg(first, "optim.lr"), "");
  const double lr = std::stod(Arg((*jobs)[1], "optim.lr"));
  EXPECT_GE(lr, std::pow(10.0, -4.5));
  EXPECT_LE(lr, std::pow(10.0, -2.5));
  EXPECT_EQ(Arg((*jobs)[1], "moa.top_k"), "");  // a MoA option is not drawn for lora

  // The same arguments give the same ids; another option gives other ids.
  auto again = MakeSweepJobs(options);
  MOA_ASSERT_OK(again);
  EXPECT_EQ((*again)[7].id, (*jobs)[7].id);
  auto other =
      MakeSweepJobs(Parse({"launch", "--config", Tiny(), "--data.test_envs", "pairs", "--n_hparams",
                           "2", "--n_trials", "3", "--output.dir", dir.path(), "--train.steps=5"}));
  MOA_ASSERT_OK(other);
  EXPECT_NE((*other)[7].id, (*jobs)[7].id);
  // [slurm] options change no job.
  auto slurm =
      MakeSweepJobs(Parse({"launch", "--config", Tiny(), "--data.test_envs", "pairs", "--n_hparams",
                           "2", "--n_trials", "3", "--output.dir", dir.path(), "--train.steps=4",
                           "--launcher", "slurm", "--slurm.partition=gpu"}));
  MOA_ASSERT_OK(slurm);
  EXPECT_EQ((*slurm)[7].id, (*jobs)[7].id);
}

// The spellings from before the one parser (--test_envs, --output_dir, --datasets, --methods)
// still work, each with a line naming its new spelling, and plan the same jobs as the new ones.
TEST(SweepTest, OldSpellingsStillWorkWithADeprecationNote) {
  std::ostringstream notes;
  auto old = ParseSweepArgs(
      {"launch", "--config", Tiny(), "--test_envs", "0,5", "--output_dir", "/tmp/x", "--datasets",
       "RotatedFashionMNIST", "--methods", "lora,moa", "--n_hparams", "1", "--n_trials", "1"},
      notes);
  MOA_ASSERT_OK(old);
  for (const char* line : {"moa sweep: --test_envs is deprecated; use --data.test_envs\n",
                           "moa sweep: --output_dir is deprecated; use --output.dir\n",
                           "moa sweep: --datasets is deprecated; use --data.dataset\n",
                           "moa sweep: --methods is deprecated; use --adapter.method\n"}) {
    EXPECT_NE(notes.str().find(line), std::string::npos) << notes.str();
  }
  std::ostringstream no_notes;
  auto current =
      ParseSweepArgs({"launch", "--config=" + Tiny(), "--data.test_envs=0,5", "--output.dir=/tmp/x",
                      "--data.dataset=RotatedFashionMNIST", "--adapter.method", "lora", "moa",
                      "--n_hparams=1", "--n_trials=1"},
                     no_notes);
  MOA_ASSERT_OK(current);
  EXPECT_EQ(no_notes.str(), "");
  EXPECT_EQ(current->methods, (std::vector<std::string>{"lora", "moa"}));
  EXPECT_EQ(current->output_dir, "/tmp/x");
  auto old_jobs = MakeSweepJobs(*old);
  auto current_jobs = MakeSweepJobs(*current);
  MOA_ASSERT_OK(old_jobs);
  MOA_ASSERT_OK(current_jobs);
  ASSERT_EQ(current_jobs->size(), 4u);  // 2 methods x 2 test environments
  ASSERT_EQ(old_jobs->size(), current_jobs->size());
  for (size_t i = 0; i < old_jobs->size(); ++i) EXPECT_EQ((*old_jobs)[i].id, (*current_jobs)[i].id);
  EXPECT_EQ((*current_jobs)[3].Describe(),
            "RotatedFashionMNIST moa test_envs=5 hparams_seed=0 trial_seed=0");
}

// An ImageFolder sweep takes its environments from data.data_dir's folders, as training does.
TEST(SweepTest, ImageFolderEnvironmentsComeFromItsFolder) {
  test::TempDir dir;
  data::test::WriteImageFolder(dir.File("data"), {"a", "b", "c"}, {"x", "y"}, 1);
  const std::string config = test::SourceDir() + "/configs/tiny_images.ini";
  const std::vector<std::string> args = {
      "launch", "--config",   config, "--data.test_envs", "single",         "--n_hparams",
      "1",      "--n_trials", "1",    "--output.dir",     dir.File("sweep")};
  std::vector<std::string> with_data = args;
  with_data.push_back("--data.data_dir=" + dir.File("data"));
  auto jobs = MakeSweepJobs(Parse(with_data));
  MOA_ASSERT_OK(jobs);
  ASSERT_EQ(jobs->size(), 3u);
  EXPECT_EQ((*jobs)[2].Describe(), "ImageFolder lora test_envs=2 hparams_seed=0 trial_seed=0");
  auto without = MakeSweepJobs(Parse(args));
  ASSERT_FALSE(without.ok());
  EXPECT_NE(without.status().message().find("data.data_dir must name the folder"),
            std::string::npos)
      << without.status();
}

TEST(SweepTest, HyperparameterDraws) {
  trainer::RunConfig lora = DefaultConfig().run;
  lora.adapter.method = "lora";
  EXPECT_TRUE(DrawHparams(lora, 1, 0, 0, {}).empty());
  const auto a = DrawHparams(lora, 1, 3, 1, {});
  EXPECT_EQ(a, DrawHparams(lora, 1, 3, 1, {}));  // reproducible
  EXPECT_NE(a, DrawHparams(lora, 1, 3, 2, {}));  // each trial draws again, as DomainBed
  std::set<std::string> keys;
  for (const auto& [key, value] : a) keys.insert(key);
  EXPECT_EQ(keys, (std::set<std::string>{"optim.lr", "optim.weight_decay", "data.batch_size",
                                         "adapter.rank", "adapter.alpha"}));
  // A pinned key is not drawn and the others keep their values.
  const auto pinned = DrawHparams(lora, 1, 3, 1, {"optim.lr"});
  ASSERT_EQ(pinned.size(), a.size() - 1);
  for (const auto& kv : pinned) EXPECT_NE(std::find(a.begin(), a.end(), kv), a.end());

  trainer::RunConfig moa = lora;
  moa.adapter.method = "moa";
  keys.clear();
  for (const auto& [key, value] : DrawHparams(moa, 1, 3, 1, {})) keys.insert(key);
  // No adapter.alpha: MoA's LoRA experts always have scale 1 (docs/method.md).
  EXPECT_EQ(keys,
            (std::set<std::string>{"optim.lr", "optim.weight_decay", "data.batch_size", "moa.top_k",
                                   "moa.router", "moa.noise", "moa.aux_weight"}));
  // Over many draws the values stay in their ranges and cover them.
  double lr_min = 1, lr_max = 0;
  std::set<std::string> batches, top_ks;
  for (int64_t h = 1; h <= 200; ++h) {
    for (const auto& [key, value] : DrawHparams(moa, 2, h, 0, {})) {
      if (key == "optim.lr") {
        lr_min = std::min(lr_min, std::stod(value));
        lr_max = std::max(lr_max, std::stod(value));
      }
      if (key == "data.batch_size") {
        const int batch = std::stoi(value);
        EXPECT_GE(batch, 8);
        EXPECT_LE(batch, 45);
        EXPECT_EQ(batch % 2, 0) << "a multiple of the job's 2 ranks";
        batches.insert(value);
      }
      if (key == "moa.top_k") top_ks.insert(value);
    }
  }
  EXPECT_GE(lr_min, std::pow(10.0, -4.5));
  EXPECT_LT(lr_min, 1e-4);
  EXPECT_LE(lr_max, std::pow(10.0, -2.5));
  EXPECT_GT(lr_max, 1e-3);
  EXPECT_GE(batches.size(), 10u);
  EXPECT_EQ(top_ks, (std::set<std::string>{"1", "2"}));
}

// `moa train --train.hparams_seed=H --train.trial_seed=T` resolves to the configuration of the
// sweep's job of that draw (what DomainBed's train.py --hparams_seed does), the user's own keys
// kept; draw 0 keeps the file's values (resuming: commands_test.cc).
TEST(SweepTest, TrainWithADrawGetsWhatTheSweepsJobOfThatDrawGets) {
  test::TempDir dir;
  const std::vector<std::string> user = {"--optim.lr=0.002", "--train.steps=4"};
  std::vector<std::string> args = {"launch",
                                   "--config",
                                   Tiny(),
                                   "--adapter.method",
                                   "lora",
                                   "moa",
                                   "--data.test_envs",
                                   "0",
                                   "--n_hparams",
                                   "3",
                                   "--n_trials",
                                   "2",
                                   "--output.dir",
                                   dir.path()};
  args.insert(args.end(), user.begin(), user.end());
  auto jobs = MakeSweepJobs(Parse(args));
  MOA_ASSERT_OK(jobs);
  ASSERT_EQ(jobs->size(), 2u * 2u * 3u);  // trials x methods x draws
  const LaunchConfig file = *LoadLaunchConfig(Tiny(), {});
  for (const SweepJob& job : *jobs) {
    SCOPED_TRACE(job.Describe());
    std::vector<std::string> job_overrides;
    for (const std::string& a : job.train_args) {
      if (a.rfind("--", 0) == 0 && a != "--config") job_overrides.push_back(a);
    }
    auto sweep_config = LoadLaunchConfig(Tiny(), job_overrides);
    MOA_ASSERT_OK(sweep_config);
    // By hand: the user's keys, the job's method and environments, and the draw's seeds only.
    std::vector<std::string> by_hand = user;
    for (const char* key :
         {"data.dataset", "adapter.method", "data.test_envs", "train.seed", "output.dir"}) {
      by_hand.push_back(std::string("--") + key + "=" + Arg(job, key));
    }
    by_hand.push_back("--train.hparams_seed=" + std::to_string(job.hparams_seed));
    by_hand.push_back("--train.trial_seed=" + std::to_string(job.trial_seed));
    std::vector<std::pair<std::string, std::string>> drawn;
    auto train_config = LoadConfigWithDraw(Tiny(), by_hand, 1, &drawn);
    MOA_ASSERT_OK(train_config);
    EXPECT_EQ(ToIni(*train_config), ToIni(*sweep_config));
    EXPECT_EQ(train_config->run.optim.lr, 0.002);  // given, so not drawn
    if (job.hparams_seed == 0) {
      EXPECT_TRUE(drawn.empty());
      EXPECT_EQ(train_config->run.optim.weight_decay, file.run.optim.weight_decay);
      EXPECT_EQ(train_config->run.data.batch_size, file.run.data.batch_size);
    } else {
      EXPECT_EQ(drawn.size(), job.method == "lora" ? 4u : 6u);  // every registered key but lr
      EXPECT_NE(train_config->run.optim.weight_decay, file.run.optim.weight_decay);
    }
  }
}

// tiny.ini with adapter.method = moa, written into `dir` (a sweep's --adapter.method lists the
// methods to sweep; parallel.ep needs MoA in the base configuration).
std::string TinyMoaConfig(const test::TempDir& dir) {
  auto text = ReadFile(Tiny());
  EXPECT_TRUE(text.ok()) << text.status();
  std::string ini = text.ok() ? *text : "";
  const size_t at = ini.find("method = lora");
  EXPECT_NE(at, std::string::npos);
  if (at != std::string::npos) ini.replace(at, 13, "method = moa");
  const std::string path = dir.File("tiny_moa.ini");
  std::ofstream(path) << ini;
  return path;
}

// Drawn batch sizes are multiples of the ranks a job runs on; on one rank they are DomainBed's
// int(2^U(3, 5.5)) unchanged.
TEST(SweepTest, DrawnBatchSizesDivideAmongTheJobsRanks) {
  trainer::RunConfig lora = DefaultConfig().run;
  lora.adapter.method = "lora";
  std::set<int64_t> odd_on_one_rank;
  for (int64_t h = 1; h <= 100; ++h) {
    const double u = HparamUniform(h, 0, "data.batch_size");
    const int64_t domainbed = static_cast<int64_t>(std::pow(2.0, 3.0 + u * 2.5));
    for (int64_t world : {1, 2, 3, 4}) {
      std::string drawn;
      for (const auto& [key, value] : DrawHparams(lora, world, h, 0, {})) {
        if (key == "data.batch_size") drawn = value;
      }
      ASSERT_FALSE(drawn.empty());
      const int64_t batch = std::stoll(drawn);
      EXPECT_EQ(batch % world, 0) << "draw " << h << " on " << world << " ranks: " << batch;
      EXPECT_EQ(batch, domainbed / world * world) << "draw " << h << " on " << world << " ranks";
    }
    if (domainbed % 2 == 1) odd_on_one_rank.insert(h);
  }
  EXPECT_GE(odd_on_one_rank.size(), 10u) << "the draws above must include odd DomainBed sizes";
}

// The sweep's plan draws for the world of the launcher it uses: mpirun's --np, Slurm's nodes x
// tasks per node, one process locally (whose draws, and so job ids, are DomainBed's).
TEST(SweepTest, JobsDrawBatchSizesForTheLaunchersRanks) {
  test::TempDir dir;
  const std::string tiny_moa = TinyMoaConfig(dir);
  auto batches = [&dir](std::vector<std::string> launcher, const std::string& config) {
    // Draws 1 to 39 (draw 0 keeps tiny.ini's batch size and passes none).
    std::vector<std::string> args = {"launch",  "--config",         config, "--data.test_envs",
                                     "0",       "--n_hparams_from", "1",    "--n_hparams",
                                     "40",      "--n_trials",       "1",    "--output.dir",
                                     dir.path()};
    args.insert(args.end(), launcher.begin(), launcher.end());
    auto jobs = MakeSweepJobs(Parse(args));
    EXPECT_TRUE(jobs.ok()) << jobs.status();
    std::vector<int64_t> sizes;
    if (jobs.ok()) {
      for (const SweepJob& job : *jobs) sizes.push_back(std::stoll(Arg(job, "data.batch_size")));
    }
    return sizes;
  };
  const std::vector<int64_t> local = batches({}, Tiny());
  ASSERT_EQ(local.size(), 39u);
  EXPECT_NE(std::find_if(local.begin(), local.end(), [](int64_t b) { return b % 2 == 1; }),
            local.end());
  const std::pair<std::vector<std::string>, int64_t> launchers[] = {
      {{"--launcher", "mpirun", "--np", "2"}, 2},
      {{"--launcher", "mpirun", "--np", "3"}, 3},
      {{"--launcher", "slurm", "--slurm.nodes=2", "--slurm.ntasks_per_node=2"}, 4},
      {{"--launcher", "mpirun", "--np", "2", "--parallel.dp=2"}, 2},
      {{"--launcher", "mpirun", "--np", "4", "--parallel.ep=2"}, 4},
  };
  for (const auto& [launcher, world] : launchers) {
    const bool expert_parallel = launcher.back() == "--parallel.ep=2";
    const std::vector<int64_t> sizes = batches(launcher, expert_parallel ? tiny_moa : Tiny());
    ASSERT_EQ(sizes.size(), 39u) << launcher[1] << " " << launcher[3];
    for (size_t i = 0; i < sizes.size(); ++i) {
      EXPECT_EQ(sizes[i] % world, 0) << world << " ranks: " << sizes[i];
      EXPECT_EQ(sizes[i], local[i] / world * world) << world << " ranks";
    }
  }
}

// A layout the launcher cannot give, or a batch that does not divide among its ranks, refuses
// the sweep before anything runs.
TEST(SweepTest, LayoutMustMatchTheLaunchersRanks) {
  test::TempDir dir;
  const std::string tiny_moa = TinyMoaConfig(dir);
  const std::vector<std::string> common = {"launch", "--config",     Tiny(),    "--data.test_envs",
                                           "0",      "--n_hparams",  "3",       "--n_trials",
                                           "1",      "--output.dir", dir.path()};
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--launcher", "mpirun", "--np", "2", "--parallel.dp=4"},
       "parallel.dp x parallel.ep = 4 x 1 = 4 ranks, but the launcher gives the 2 ranks of each "
       "job (--launcher mpirun --np 2); make them agree, or set parallel.dp = 0"},
      {{"--parallel.dp=2"},
       "parallel.dp x parallel.ep = 2 x 1 = 2 ranks, but the launcher gives the 1 rank of each "
       "job (--launcher local)"},
      {{"--launcher", "slurm", "--slurm.nodes=2", "--slurm.ntasks_per_node=3", "--parallel.dp=2"},
       "the 6 ranks of each job (--launcher slurm: slurm.nodes = 2 x slurm.ntasks_per_node = 3)"},
      {{"--launcher", "mpirun", "--np", "3", "--parallel.ep=2"},
       "parallel.ep = 2 does not divide the 3 ranks of each job (--launcher mpirun --np 3)"},
      {{"--launcher", "mpirun", "--np", "3"},
       "hparams_seed=0 trial_seed=0: data.batch_size = 8 does not divide among the 3 ranks of "
       "each job (--launcher mpirun --np 3)"},
      {{"--launcher", "mpirun", "--np", "2", "--data.batch_size=9"},
       "data.batch_size = 9 does not divide among the 2 ranks"},
  };
  for (const auto& [extra, message] : cases) {
    std::vector<std::string> args = common;
    args.insert(args.end(), extra.begin(), extra.end());
    if (extra.back() == "--parallel.ep=2") args[2] = tiny_moa;
    auto jobs = MakeSweepJobs(Parse(args));
    ASSERT_FALSE(jobs.ok()) << extra[0];
    EXPECT_NE(jobs.status().message().find(message), std::string::npos) << jobs.status();
  }
}

// The GPUs a sweep hands out: the visible ones (CUDA_VISIBLE_DEVICES when set; this machine's
// LibTorch sees none), none, or a list; and each slot's share of them, one per rank.
TEST(SweepTest, GpusForJobsRunningAtOnce) {
  const char* saved = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string saved_value = saved == nullptr ? "" : saved;
  setenv("CUDA_VISIBLE_DEVICES", "3,GPU-5d2c", 1);
  EXPECT_EQ(SweepGpus("auto"), (std::vector<std::string>{"3", "GPU-5d2c"}));
  setenv("CUDA_VISIBLE_DEVICES", "", 1);
  EXPECT_TRUE(SweepGpus("auto").empty()) << "an empty CUDA_VISIBLE_DEVICES hides every GPU";
  unsetenv("CUDA_VISIBLE_DEVICES");
  EXPECT_EQ(SweepGpus("auto").size(), static_cast<size_t>(parallel::VisibleGpus()));
  if (saved != nullptr) setenv("CUDA_VISIBLE_DEVICES", saved_value.c_str(), 1);
  EXPECT_TRUE(SweepGpus("none").empty());
  EXPECT_EQ(SweepGpus("0,2, 4"), (std::vector<std::string>{"0", "2", "4"}));

  const std::vector<std::string> four = {"0", "1", "2", "3"};
  EXPECT_EQ(SlotGpus(four, 0, 1), "0");
  EXPECT_EQ(SlotGpus(four, 3, 1), "3");
  EXPECT_EQ(SlotGpus(four, 4, 1), "0") << "a fifth job at once shares the first GPU";
  EXPECT_EQ(SlotGpus(four, 1, 2), "2,3");
  EXPECT_EQ(SlotGpus({"0", "1", "2"}, 1, 2), "2,0");
  EXPECT_EQ(SlotGpus({"7"}, 2, 3), "7") << "three ranks on one GPU";
  EXPECT_EQ(SlotGpus({}, 1, 2), "");
}

TEST(SweepTest, BadArgumentsNameTheProblem) {
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"launch", "--config", Tiny()}, "--output.dir is required"},
      {{"launch", "--output.dir", "/tmp/x", "--launcher", "pbs"}, "--launcher must be local"},
      {{"launch", "--output.dir", "/tmp/x", "--n_trials", "0"}, "--n_trials needs an integer"},
      {{"launch", "--output.dir", "/tmp/x", "--train.seed=3"}, "--train.seed is set by moa sweep"},
      {{"launch", "--output.dir", "/tmp/x", "--n_hparams"}, "--n_hparams needs a value"},
      {{"launch", "--output.dir", "/tmp/x", "--n_trials=many"},
       "--n_trials needs an integer of at least 1, got 'many'"},
      {{"launch", "--output.dir", "/tmp/x", "--output_directory", "/tmp/y"},
       "unknown option --output_directory (see `moa sweep --help`)"},
      {{"launch", "--output.dir", "/tmp/x", "--config", "/nonexistent.ini"},
       "--config /nonexistent.ini is not a file"},
      {{"relaunch", "--output.dir", "/tmp/x"}, "unknown sweep command 'relaunch'"},
      {{"launch", "--output.dir", "/tmp/x", "stray"}, "unexpected argument 'stray'"},
      {{"launch", "--output.dir", "/tmp/x", "--gpus", "0,,1"},
       "--gpus 0,,1: expected auto, none or a comma-separated list"},
      {{"launch", "--output.dir", "/tmp/x", "--gpus", "0;rm"}, "--gpus 0;rm: expected auto"},
      {{"launch", "--output.dir", "/tmp/x", "--launcher", "slurm", "--gpus", "0,1"},
       "on Slurm ask for GPUs with --slurm.gpus_per_task"},
      {{"launch", "--output.dir", "/tmp/x", "--dry_run"}, "--dry_run is for --launcher slurm"},
      {{"launch", "--output.dir", "/tmp/x", "--launcher", "mpirun", "--dry_run"},
       "--dry_run is for --launcher slurm"},
      {{"launch", "--output.dir", "/tmp/x", "--np", "4"},
       "--np is for --launcher mpirun, not local"},
      {{"launch", "--output.dir", "/tmp/x", "--launcher=slurm", "--np=4"},
       "--np is for --launcher mpirun, not slurm"},
      {{"launch", "--output.dir", "/tmp/x", "--mpirun", "srun"},
       "--mpirun is for --launcher mpirun, not local"},
      {{"list", "--output.dir", "/tmp/x", "--launcher", "slurm", "--max_parallel", "4"},
       "--max_parallel is for --launcher local and mpirun, not slurm"},
      {{"launch", "--output.dir", "/tmp/x", "--slurm.partition", "gpu"},
       "--slurm.partition is for --launcher slurm, not local"},
      {{"launch", "--output.dir", "/tmp/x", "--launcher", "mpirun", "--slurm.time=1:00:00"},
       "--slurm.time is for --launcher slurm, not mpirun"},
  };
  for (const auto& [args, message] : cases) {
    auto options = ParseSweepArgs(args);
    ASSERT_FALSE(options.ok()) << message;
    EXPECT_NE(options.status().message().find(message), std::string::npos)
        << options.status().message();
  }
  auto jobs = MakeSweepJobs(Parse({"launch", "--config", Tiny(), "--output.dir", "/tmp/x",
                                   "--data.test_envs", "0", "--optim.lr=-1", "--n_hparams", "1"}));
  ASSERT_FALSE(jobs.ok());
  EXPECT_NE(jobs.status().message().find("optim.lr: must be positive"), std::string::npos)
      << jobs.status().message();
}

}  // namespace
}  // namespace moa::launch
