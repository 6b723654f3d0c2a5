// `moa sweep`'s launchers end to end on the tiny configuration: the Slurm script (its quoting
// checked by running it with a stand-in srun that prints its arguments), and the local and
// mpirun launchers: relaunching a finished sweep runs nothing, delete_incomplete removes only
// unfinished runs of the sweep that no live process holds, a relaunched incomplete run resumes from
// its checkpoint, and jobs running at once get GPUs of their own.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "launch/hparams.h"
#include "launch/launchers.h"
#include "launch/options.h"
#include "launch/sweep.h"
#include "parallel/device.h"
#include "tests/launch/sweep_support.h"
#include "tests/support/test_support.h"

namespace moa::launch {
namespace {

namespace fs = std::filesystem;
using test::Moa;
using test::Parse;
using test::Tiny;

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
           "#SBATCH --requeue\n", "#SBATCH --signal=USR1@180\n", "moa=" + Moa() + "\n",
           "mpi=pmix\n"}) {
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
  // A task whose moa stopped on the warning signal (exit code 75, state saved) is requeued and
  // ends with that code; stand-ins for srun (stopping) and scontrol (printing its arguments).
  const std::string stopping = dir.File("stopping");
  fs::create_directories(stopping);
  std::ofstream(stopping + "/srun") << "#!/bin/bash\necho \"srun $*\"\nexit 75\n";
  std::ofstream(stopping + "/scontrol") << "#!/bin/bash\necho \"scontrol $*\"\n";
  chmod((stopping + "/srun").c_str(), 0755);
  chmod((stopping + "/scontrol").c_str(), 0755);
  EXPECT_EQ(test::RunShell("PATH=" + stopping +
                               ":$PATH SLURM_ARRAY_JOB_ID=77 SLURM_ARRAY_TASK_ID=3 bash " + path,
                           &out),
            75)
      << out;
  EXPECT_NE(out.find("requeueing 77_3\nscontrol requeue 77_3\n"), std::string::npos) << out;
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

  // An sbatch that refuses the script (a stand-in, as a cluster without the partition answers):
  // the error shows sbatch's words, and no run directory is left to look launched.
  const std::string bin = dir.File("bin");
  fs::create_directories(bin);
  for (const auto& [name, body] : std::map<std::string, std::string>{
           {"srun", "exit 1\n"},
           {"sbatch",
            "echo 'sbatch: error: Batch job submission failed: Invalid partition name "
            "specified' >&2\nexit 1\n"}}) {
    std::ofstream(bin + "/" + name) << "#!/bin/sh\n" << body;
    fs::permissions(bin + "/" + name, fs::perms::owner_all);
  }
  const std::string refused_launch = "PATH=" + bin + ":$PATH " + Moa() + " sweep launch --config " +
                                     Tiny() +
                                     " --data.test_envs 0,5 --n_hparams 1 --n_trials 1 "
                                     "--launcher slurm --output.dir " +
                                     dir.File("refused");
  EXPECT_EQ(test::RunShell(refused_launch, &out), 1) << out;
  EXPECT_NE(out.find("failed (exit code 1): sbatch: error: Batch job submission failed: Invalid "
                     "partition name specified"),
            std::string::npos)
      << out;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir.File("refused"))) {
    left.push_back(e.path().filename());
  }
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"moa-sweep.lock", "slurm"}))
      << "only the written script's folder (and the sweep's lock file) stay";

  // squeue's answers: a listed task, an ended one Slurm still knows, one it does not know
  // (purged after its end, or another cluster's: unknown), and no answer at all (no controller).
  const std::map<std::string, std::pair<std::string, std::optional<bool>>> answers = {
      {"listed", {"echo 12_3", true}},
      {"ended", {"true", false}},
      {"unknown",
       {"echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1", std::nullopt}},
      {"down",
       {"echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1",
        std::nullopt}}};
  const std::string search_path = std::getenv("PATH");
  for (const auto& [name, answer] : answers) {
    std::ofstream(bin + "/squeue") << "#!/bin/sh\n" << answer.first << "\n";
    fs::permissions(bin + "/squeue", fs::perms::owner_all);
    setenv("PATH", (bin + ":" + search_path).c_str(), 1);
    EXPECT_EQ(SlurmTaskListed("12_3"), answer.second) << name;
    setenv("PATH", search_path.c_str(), 1);
  }
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
  for (const auto& e : fs::directory_iterator(dir.File("sweep"))) {
    if (e.is_directory()) runs.push_back(e.path());
  }
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

  // While a launch runs (its shared flock of moa-sweep.lock, taken here by the test),
  // delete_incomplete refuses to start; launches of other jobs may run beside it.
  const std::string delete_incomplete = Moa() + " sweep delete_incomplete --config " + Tiny() +
                                        " --data.test_envs 0,5 --n_hparams 2 --n_trials 1"
                                        " --train.steps=6 --train.checkpoint_freq=3 --output.dir " +
                                        dir.File("sweep");
  {
    const int launch = open(dir.File("sweep/moa-sweep.lock").c_str(), O_RDONLY);
    ASSERT_GE(launch, 0);
    ASSERT_EQ(flock(launch, LOCK_SH), 0);
    EXPECT_EQ(test::RunShell(delete_incomplete, &out), 1) << out;
    EXPECT_NE(out.find("a moa sweep launch (or a job it started) is running jobs of " +
                       dir.File("sweep")),
              std::string::npos)
        << out;
    ASSERT_EQ(test::RunShell(sweep, &out), 0) << out;
    EXPECT_NE(out.find("nothing to launch"), std::string::npos) << out;
    close(launch);
  }

  // Two incomplete runs, one of them locked by a live process (this test's): only the other
  // goes, and the exit status says that one was left.
  fs::remove(runs[2] + "/done");
  fs::remove(runs[1] + "/done");
  const nlohmann::json owner = {
      {"host", parallel::Hostname()}, {"pid", static_cast<int64_t>(getpid())}, {"slurm", ""}};
  std::ofstream(runs[1] + "/moa.lock") << owner.dump() << "\n";
  EXPECT_EQ(test::RunShell(delete_incomplete, &out), 1) << out;
  EXPECT_NE(out.find("deleted 1 incomplete job"), std::string::npos) << out;
  EXPECT_NE(out.find(runs[1] + " is in use by a running job (host " + parallel::Hostname() +
                     ", pid " + std::to_string(getpid()) + "); left alone"),
            std::string::npos)
      << out;
  EXPECT_FALSE(fs::exists(runs[2]));
  EXPECT_TRUE(fs::exists(runs[1] + "/results.jsonl"));
  EXPECT_TRUE(fs::exists(runs[0] + "/done"));
  EXPECT_TRUE(fs::exists(runs[3] + "/done"));
  EXPECT_TRUE(fs::exists(dir.File("sweep/not_a_job")));
  EXPECT_TRUE(fs::exists(dir.File("sweep/notes.txt")));
  ASSERT_EQ(test::RunShell(list, &out), 0) << out;
  EXPECT_NE(out.find("4 jobs: 2 done, 1 incomplete, 1 not launched"), std::string::npos) << out;

  // collect reads the sweep (foreign entries noted, not touched).
  ASSERT_EQ(test::RunShell(Moa() + " collect --input_dir " + dir.File("sweep"), &out), 0) << out;
  EXPECT_NE(out.find("Total records: 9"), std::string::npos) << out;
  EXPECT_NE(out.find("-------- Dataset: RotatedFashionMNIST, model selection method: "
                     "training-domain validation set"),
            std::string::npos)
      << out;
}

// With GPUs (here named with --gpus; this machine has none, so the runs train on the CPU), each
// job running at once gets a GPU of its own: replaying the launcher's started/done lines, no job
// starts on a GPU that a running job holds, and every run's env.json shows what it was given.
TEST(SweepTest, LocalJobsRunningAtOnceGetGpusOfTheirOwn) {
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + " sweep launch --config " + Tiny() +
                               " --data.test_envs 0,5 --n_hparams 2 --n_trials 1 --max_parallel 2"
                               " --gpus 0,1 --train.steps=2 --train.checkpoint_freq=2"
                               " --output.dir " +
                               dir.File("sweep"),
                           &out),
            0)
      << out;
  std::map<std::string, std::string> gpu_of;
  std::set<std::string> busy, used;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string counter, event, id;
    words >> counter >> event >> id;
    if (event == "started") {
      const size_t at = line.find("(CUDA_VISIBLE_DEVICES=");
      ASSERT_NE(at, std::string::npos) << line;
      const std::string gpu = line.substr(at + 22, line.find(')', at) - at - 22);
      EXPECT_EQ(busy.count(gpu), 0u)
          << id << " started on GPU " << gpu << ", held by a running job";
      busy.insert(gpu);
      used.insert(gpu);
      gpu_of[id] = gpu;
    } else if (event == "done") {
      ASSERT_EQ(gpu_of.count(id), 1u) << line;
      busy.erase(gpu_of[id]);
    }
  }
  EXPECT_EQ(gpu_of.size(), 4u) << out;
  EXPECT_EQ(used, (std::set<std::string>{"0", "1"})) << out;
  for (const auto& [id, gpu] : gpu_of) {
    const auto env = nlohmann::json::parse(ReadAll(dir.File("sweep/" + id + "/env.json")));
    EXPECT_EQ(env["devices"][0]["cuda_visible_devices"], gpu) << id;
  }
}

// Launches a one-job sweep of the tiny configuration on test environment 5 with `mpirun --np 2`
// (`args`: the draw and the steps) and returns the job's run directory, expected done.
std::string LaunchOneMpirunJob(const test::TempDir& dir, const std::string& args) {
  std::string out;
  EXPECT_EQ(test::RunShell(Moa() + " sweep launch --config " + Tiny() +
                               " --data.test_envs 5 --n_trials 1 --launcher mpirun --np 2"
                               " --mpirun '" MOA_TEST_MPIRUN "' " +
                               args + " --output.dir " + dir.File("sweep"),
                           &out),
            0)
      << out;
  EXPECT_NE(out.find("1 job ran, 0 failed"), std::string::npos) << out;
  std::string run;
  for (const auto& e : fs::directory_iterator(dir.File("sweep"))) {
    if (e.is_directory()) run = e.path();
  }
  EXPECT_TRUE(fs::exists(run + "/done")) << out;
  return run;
}

// Both ranks of an mpirun job see the two GPUs its slot holds (each then takes local rank % 2).
TEST(SweepTest, MpirunLauncher) {
  test::TempDir dir;
  const std::string run = LaunchOneMpirunJob(
      dir, "--n_hparams 1 --train.steps=4 --train.checkpoint_freq=2 --gpus 4,5,6,7");
  const auto env = nlohmann::json::parse(ReadAll(run + "/env.json"));
  EXPECT_EQ(env["world"]["size"], 2) << env.dump(2);
  ASSERT_EQ(env["devices"].size(), 2u) << env.dump(2);
  for (const auto& device : env["devices"]) EXPECT_EQ(device["cuda_visible_devices"], "4,5");
}

// A drawn batch size that DomainBed would make odd is rounded to the 2 ranks mpirun gives each
// job, so the job starts and finishes (it used to die at start-up with the default
// parallel.dp = 0).
TEST(SweepTest, MpirunJobOfAnOddDomainBedBatchRuns) {
  MOA_ASSERT_OK_AND_ASSIGN(const LaunchConfig base, LoadLaunchConfig(Tiny(), {}));
  int64_t draw = 0, odd = 0;
  for (int64_t h = 1; h < 100 && draw == 0; ++h) {
    for (const auto& [key, value] : DrawHparams(base.run, 1, h, 0, {})) {
      if (key == "data.batch_size" && std::stoll(value) % 2 == 1) {
        draw = h;
        odd = std::stoll(value);
      }
    }
  }
  ASSERT_GT(draw, 0);
  test::TempDir dir;
  const std::string run = LaunchOneMpirunJob(dir, "--n_hparams_from " + std::to_string(draw) +
                                                      " --n_hparams " + std::to_string(draw + 1) +
                                                      " --train.steps=2 --train.checkpoint_freq=2");
  EXPECT_NE(ReadAll(run + "/config.ini").find("batch_size = " + std::to_string(odd - 1) + "\n"),
            std::string::npos)
      << "draw " << draw << " (DomainBed: " << odd << ")\n"
      << ReadAll(run + "/config.ini");
}

}  // namespace
}  // namespace moa::launch
