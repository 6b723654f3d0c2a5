// `moa sweep`: test-environment sets, the job list and its ids, hyper-parameter draws, the
// Slurm script (its quoting checked by running it with a stand-in srun that prints its
// arguments), ImageFolder's environments read from its folder, and the local and mpirun launchers
// end to end on the tiny configuration: relaunching a finished sweep runs nothing,
// delete_incomplete removes only unfinished runs of the sweep, and a relaunched incomplete run
// resumes from its checkpoint.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/files.h"
#include "launch/hparams.h"
#include "launch/launchers.h"
#include "launch/options.h"
#include "launch/sweep.h"
#include "tests/data/image_fixtures.h"
#include "tests/support/test_support.h"

namespace moa::launch {
namespace {

namespace fs = std::filesystem;

std::string Moa() { return test::BinaryDir() + "/moa"; }
std::string Tiny() { return test::SourceDir() + "/configs/tiny.ini"; }

SweepOptions Parse(const std::vector<std::string>& args) {
  auto options = ParseSweepArgs(args);
  EXPECT_TRUE(options.ok()) << options.status();
  return options.ok() ? *options : SweepOptions{};
}

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
  auto slurm = MakeSweepJobs(Parse({"launch", "--config", Tiny(), "--data.test_envs", "pairs",
                                    "--n_hparams", "2", "--n_trials", "3", "--output.dir",
                                    dir.path(), "--train.steps=4", "--slurm.partition=gpu"}));
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
  EXPECT_TRUE(DrawHparams(lora, 0, 0, {}).empty());
  const auto a = DrawHparams(lora, 3, 1, {});
  EXPECT_EQ(a, DrawHparams(lora, 3, 1, {}));  // reproducible
  EXPECT_NE(a, DrawHparams(lora, 3, 2, {}));  // each trial draws again, as DomainBed
  std::set<std::string> keys;
  for (const auto& [key, value] : a) keys.insert(key);
  EXPECT_EQ(keys, (std::set<std::string>{"optim.lr", "optim.weight_decay", "data.batch_size",
                                         "adapter.rank", "adapter.alpha"}));
  // A pinned key is not drawn and the others keep their values.
  const auto pinned = DrawHparams(lora, 3, 1, {"optim.lr"});
  ASSERT_EQ(pinned.size(), a.size() - 1);
  for (const auto& kv : pinned) EXPECT_NE(std::find(a.begin(), a.end(), kv), a.end());

  trainer::RunConfig moa = lora;
  moa.adapter.method = "moa";
  keys.clear();
  for (const auto& [key, value] : DrawHparams(moa, 3, 1, {})) keys.insert(key);
  EXPECT_EQ(keys, (std::set<std::string>{"optim.lr", "optim.weight_decay", "data.batch_size",
                                         "adapter.alpha", "moa.top_k", "moa.router", "moa.noise",
                                         "moa.aux_weight"}));
  // Over many draws the values stay in their ranges and cover them.
  double lr_min = 1, lr_max = 0;
  std::set<std::string> batches, top_ks;
  moa.parallel.dp = 2;
  for (int64_t h = 1; h <= 200; ++h) {
    for (const auto& [key, value] : DrawHparams(moa, h, 0, {})) {
      if (key == "optim.lr") {
        lr_min = std::min(lr_min, std::stod(value));
        lr_max = std::max(lr_max, std::stod(value));
      }
      if (key == "data.batch_size") {
        const int batch = std::stoi(value);
        EXPECT_GE(batch, 8);
        EXPECT_LE(batch, 45);
        EXPECT_EQ(batch % 2, 0) << "a multiple of parallel.dp";
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

// A stand-in srun on PATH prints the arguments it gets, one per line.
std::string FakeSrunDir(const test::TempDir& dir) {
  const std::string bin = dir.File("bin");
  fs::create_directories(bin);
  std::ofstream(bin + "/srun") << "#!/bin/bash\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n";
  chmod((bin + "/srun").c_str(), 0755);
  return bin;
}

TEST(SweepTest, SlurmScriptIsReadableAndQuotesEveryValue) {
  test::TempDir dir;
  const std::string weird = "/data/it's a \"dir\" $HOME `x`";
  const SweepOptions options = Parse({"launch",
                                      "--config",
                                      Tiny(),
                                      "--data.test_envs",
                                      "0,5",
                                      "--n_hparams",
                                      "2",
                                      "--n_trials",
                                      "1",
                                      "--launcher",
                                      "slurm",
                                      "--output.dir",
                                      dir.File("sweep"),
                                      "--moa",
                                      Moa(),
                                      "--dry_run",
                                      "--data.data_dir=" + weird,
                                      "--slurm.partition=gpu",
                                      "--slurm.account=dg-lab",
                                      "--slurm.time=02:00:00",
                                      "--slurm.gpus_per_task=1",
                                      "--slurm.cpus_per_task=8",
                                      "--slurm.ntasks_per_node=4",
                                      "--slurm.nodes=2",
                                      "--slurm.max_running=3"});
  auto jobs = MakeSweepJobs(options);
  MOA_ASSERT_OK(jobs);
  ASSERT_EQ(jobs->size(), 4u);
  auto base = LoadSweepBase(options);
  MOA_ASSERT_OK(base);
  auto script = SlurmScript(*jobs, options, base->slurm);
  MOA_ASSERT_OK(script);
  for (const std::string& line : std::vector<std::string>{
           "#SBATCH --array=0-3%3\n", "#SBATCH --nodes=2\n", "#SBATCH --ntasks-per-node=4\n",
           "#SBATCH --cpus-per-task=8\n", "#SBATCH --gpus-per-task=1\n",
           "#SBATCH --time=02:00:00\n", "#SBATCH --partition=gpu\n", "#SBATCH --account=dg-lab\n",
           "#SBATCH --requeue\n", "moa=" + Moa() + "\n", "mpi=pmix\n"}) {
    EXPECT_NE(script->find(line), std::string::npos) << line << "\n" << *script;
  }
  EXPECT_NE(script->find("  3)  # RotatedFashionMNIST lora test_envs=5 hparams_seed=1"),
            std::string::npos)
      << *script;

  // The script as Slurm runs it, task 3, with the stand-in srun.
  const std::string path = dir.File("job.sbatch");
  MOA_ASSERT_OK(WriteFileAtomically(path, *script));
  std::string out;
  ASSERT_EQ(test::RunShell("PATH=" + FakeSrunDir(dir) + ":$PATH SLURM_ARRAY_TASK_ID=3 bash " + path,
                           &out),
            0)
      << out;
  std::vector<std::string> expected = {"--mpi=pmix", Moa(), "train"};
  for (const std::string& a : (*jobs)[3].train_args) expected.push_back(a);
  std::string expected_text;
  for (const std::string& a : expected) expected_text += a + "\n";
  EXPECT_EQ(out, expected_text);
  EXPECT_NE(out.find("--data.data_dir=" + weird + "\n"), std::string::npos);

  // A run with a full-state checkpoint resumes; a done run does nothing.
  fs::create_directories((*jobs)[3].dir + "/checkpoints");
  std::ofstream((*jobs)[3].dir + "/checkpoints/state.safetensors") << "x";
  ASSERT_EQ(test::RunShell("PATH=" + FakeSrunDir(dir) + ":$PATH SLURM_ARRAY_TASK_ID=3 bash " + path,
                           &out),
            0);
  EXPECT_NE(out.find("resuming " + (*jobs)[3].dir + " from its last checkpoint"), std::string::npos)
      << out;
  EXPECT_NE(out.find("--mpi=pmix\n" + Moa() + "\ntrain\n--resume\n" + (*jobs)[3].dir + "\n"),
            std::string::npos)
      << out;
  std::ofstream((*jobs)[3].dir + "/done") << "done\n";
  ASSERT_EQ(test::RunShell("PATH=" + FakeSrunDir(dir) + ":$PATH SLURM_ARRAY_TASK_ID=3 bash " + path,
                           &out),
            0);
  EXPECT_EQ(out, "moa sweep: " + (*jobs)[3].dir + " is done; nothing to run\n");

  // A value no #SBATCH line can carry is refused, naming its key.
  SlurmConfig bad = base->slurm;
  bad.partition = "gpu; rm -rf /";
  auto refused = SlurmScript(*jobs, options, bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("slurm.partition = 'gpu; rm -rf /'"), std::string::npos)
      << refused.status().message();

  // The command with --dry_run writes the script and submits nothing.
  ASSERT_EQ(test::RunShell(Moa() + " sweep launch --config " + Tiny() +
                               " --data.test_envs 0 --n_hparams 1 --n_trials 1 --launcher slurm"
                               " --dry_run --output.dir " +
                               dir.File("dry"),
                           &out),
            0)
      << out;
  EXPECT_NE(out.find("--dry_run: not submitted"), std::string::npos) << out;
  int scripts = 0;
  for (const auto& e : fs::directory_iterator(dir.File("dry/slurm"))) {
    scripts += e.path().extension() == ".sbatch";
  }
  EXPECT_EQ(scripts, 1);
}

std::string ReadAll(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : "";
}

int CountLines(const std::string& path) {
  const std::string text = ReadAll(path);
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

TEST(SweepTest, LocalLauncherRelaunchDeleteAndResume) {
  test::TempDir dir;
  const std::string sweep = Moa() + " sweep launch --config " + Tiny() +
                            " --data.test_envs 0,5 --n_hparams 2 --n_trials 1 --max_parallel 2"
                            " --train.steps=6 --train.checkpoint_freq=3 --output.dir " +
                            dir.File("sweep");
  std::string out;
  ASSERT_EQ(test::RunShell(sweep, &out), 0) << out;
  EXPECT_NE(out.find("4 jobs: 0 done, 0 incomplete, 4 not launched"), std::string::npos) << out;
  EXPECT_NE(out.find("4 jobs ran, 0 failed"), std::string::npos) << out;
  std::vector<std::string> runs;
  for (const auto& e : fs::directory_iterator(dir.File("sweep"))) runs.push_back(e.path());
  ASSERT_EQ(runs.size(), 4u);
  for (const std::string& run : runs) {
    EXPECT_TRUE(fs::exists(run + "/done")) << run;
    EXPECT_EQ(CountLines(run + "/results.jsonl"), 3) << run;  // steps 0, 3, 5
    EXPECT_TRUE(fs::exists(run + "/job.json")) << run;
  }

  // Relaunching runs nothing and changes nothing.
  const auto stamp = fs::last_write_time(runs[0] + "/results.jsonl");
  ASSERT_EQ(test::RunShell(sweep, &out), 0) << out;
  EXPECT_NE(out.find("4 jobs: 4 done, 0 incomplete, 0 not launched"), std::string::npos) << out;
  EXPECT_NE(out.find("nothing to launch"), std::string::npos) << out;
  EXPECT_EQ(out.find("started"), std::string::npos) << out;
  EXPECT_EQ(fs::last_write_time(runs[0] + "/results.jsonl"), stamp);

  // One run killed after its first checkpoints (no `done`), one that never reached a checkpoint,
  // and foreign entries: delete_incomplete removes the two runs and nothing else.
  fs::remove(runs[0] + "/done");
  fs::remove(runs[1] + "/done");
  fs::remove_all(runs[1] + "/checkpoints");
  fs::create_directories(dir.File("sweep/not_a_job"));
  std::ofstream(dir.File("sweep/notes.txt")) << "mine\n";
  const std::string list = Moa() + " sweep list --config " + Tiny() +
                           " --data.test_envs 0,5 --n_hparams 2 --n_trials 1"
                           " --train.steps=6 --train.checkpoint_freq=3 --output.dir " +
                           dir.File("sweep");
  ASSERT_EQ(test::RunShell(list, &out), 0) << out;
  EXPECT_NE(out.find("4 jobs: 2 done, 2 incomplete, 0 not launched"), std::string::npos) << out;

  // Relaunch: the run with a checkpoint resumes, the other starts again.
  ASSERT_EQ(test::RunShell(sweep, &out), 0) << out;
  EXPECT_NE(out.find("relaunching 2 incomplete jobs"), std::string::npos) << out;
  EXPECT_NE(out.find("2 entries of " + dir.File("sweep") + " belong to no job"), std::string::npos)
      << out;
  EXPECT_NE(ReadAll(runs[0] + "/err.txt").find("resumed " + runs[0] + " after step 5"),
            std::string::npos)
      << ReadAll(runs[0] + "/err.txt");
  EXPECT_EQ(CountLines(runs[0] + "/results.jsonl"), 3);
  EXPECT_EQ(CountLines(runs[1] + "/results.jsonl"), 3);
  EXPECT_TRUE(fs::exists(runs[0] + "/done"));

  fs::remove(runs[2] + "/done");
  ASSERT_EQ(test::RunShell(Moa() + " sweep delete_incomplete --config " + Tiny() +
                               " --data.test_envs 0,5 --n_hparams 2 --n_trials 1"
                               " --train.steps=6 --train.checkpoint_freq=3 --output.dir " +
                               dir.File("sweep"),
                           &out),
            0)
      << out;
  EXPECT_NE(out.find("deleted 1 incomplete job"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(runs[2]));
  EXPECT_TRUE(fs::exists(runs[0] + "/done"));
  EXPECT_TRUE(fs::exists(runs[3] + "/done"));
  EXPECT_TRUE(fs::exists(dir.File("sweep/not_a_job")));
  EXPECT_TRUE(fs::exists(dir.File("sweep/notes.txt")));
  ASSERT_EQ(test::RunShell(list, &out), 0) << out;
  EXPECT_NE(out.find("4 jobs: 3 done, 0 incomplete, 1 not launched"), std::string::npos) << out;

  // collect reads the sweep (foreign entries noted, not touched).
  ASSERT_EQ(test::RunShell(Moa() + " collect --input_dir " + dir.File("sweep"), &out), 0) << out;
  EXPECT_NE(out.find("Total records: 9"), std::string::npos) << out;
  EXPECT_NE(out.find("-------- Dataset: RotatedFashionMNIST, model selection method: "
                     "training-domain validation set"),
            std::string::npos)
      << out;
}

TEST(SweepTest, MpirunLauncher) {
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " sweep launch --config " + Tiny() +
                               " --data.test_envs 5 --n_hparams 1 --n_trials 1 --launcher mpirun"
                               " --np 2 --mpirun '" MOA_TEST_MPIRUN
                               "' --train.steps=4 --train.checkpoint_freq=2 --output.dir " +
                               dir.File("sweep"),
                           &out),
            0)
      << out;
  EXPECT_NE(out.find("1 job ran, 0 failed"), std::string::npos) << out;
  std::string run;
  for (const auto& e : fs::directory_iterator(dir.File("sweep"))) run = e.path();
  EXPECT_TRUE(fs::exists(run + "/done"));
  EXPECT_NE(ReadAll(run + "/env.json").find("\"size\": 2"), std::string::npos)
      << ReadAll(run + "/env.json");
}

}  // namespace
}  // namespace moa::launch
