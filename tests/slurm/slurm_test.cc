// A real Slurm round trip: starts munged, slurmctld and slurmd on 127.0.0.1 from a configuration
// in a temporary folder (tests/slurm/local_cluster.sh), submits a sweep of the tiny configuration
// (2 draws x 1 trial x 2 test environments) with `moa sweep launch --launcher slurm`, waits for
// it, checks every run and `moa collect`'s oracle table against the runs' own records, checks
// that relaunching submits nothing (also while a task is queued or running), then kills one
// training task mid-run, requeues it and checks that it resumed from its checkpoint; and sends a
// task the warning signal, which it answers by saving its state and being requeued, resuming to the
// uninterrupted run's results; and a two-rank task one of whose ranks dies ends instead of
// hanging. The daemons are stopped at the end of each test.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>
#include <tuple>

#include "common/files.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

namespace fs = std::filesystem;

std::string Moa() { return test::BinaryDir() + "/moa"; }
std::string Tiny() { return test::SourceDir() + "/configs/tiny.ini"; }

// Polls `done` every 200 ms for at most `seconds`.
template <typename Predicate>
bool WaitFor(Predicate done, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return done();
}

// The cluster's lifetime: started in the constructor, stopped in the destructor.
class LocalCluster {
 public:
  explicit LocalCluster(const std::string& dir) : dir_(dir) {
    started_ = test::RunShell("bash " + Script() + " start " + dir_, &log_) == 0;
  }
  ~LocalCluster() {
    std::string out;
    test::RunShell("bash " + Script() + " stop " + dir_, &out);
  }
  bool started() const { return started_; }
  const std::string& log() const { return log_; }
  /// `command` with SLURM_CONF pointing at this cluster.
  std::string With(const std::string& command) const {
    return "SLURM_CONF=" + dir_ + "/slurm.conf " + command;
  }
  /// Whether Slurm job `job` (all its array tasks) has left the queue within `seconds`.
  bool WaitUntilGone(const std::string& job, double seconds) const {
    return WaitFor(
        [&] {
          std::string queue;
          test::RunShell(With("squeue -h -j " + job), &queue);
          return queue.find(job) == std::string::npos;
        },
        seconds);
  }
  std::string Logs() const {
    std::string out;
    test::RunShell("tail -n 30 " + dir_ + "/slurmctld.log " + dir_ + "/slurmd.log", &out);
    return out;
  }

 private:
  static std::string Script() { return test::SourceDir() + "/tests/slurm/local_cluster.sh"; }
  std::string dir_;
  std::string log_;
  bool started_ = false;
};

std::string SubmittedJob(const std::string& output) {
  std::smatch match;
  if (!std::regex_search(output, match, std::regex("submitted Slurm job ([0-9]+)"))) return "";
  return match[1].str();
}

std::vector<nlohmann::json> Records(const std::string& run) {
  return test::ReadJsonLines(run + "/results.jsonl");
}

std::vector<std::string> RunDirs(const std::string& sweep) {
  std::vector<std::string> runs;
  for (const auto& e : fs::directory_iterator(sweep)) {
    if (fs::exists(e.path() / "job.json")) runs.push_back(e.path());
  }
  std::sort(runs.begin(), runs.end());
  return runs;
}

std::string ReadAll(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : "";
}

// The pid of the `moa train` process of a run (found by its --output.dir argument), or 0.
pid_t TrainingProcess(const std::string& run) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = ReadAll(e.path().string() + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find("/moa train") != std::string::npos &&
        cmdline.find("--output.dir=" + run + " ") != std::string::npos &&
        cmdline.find("srun") == std::string::npos) {
      return static_cast<pid_t>(std::stol(name));
    }
  }
  return 0;
}

TEST(SlurmTest, SweepRoundTripAndRequeue) {
  test::TempDir dir;
  LocalCluster cluster(dir.File("cluster"));
  ASSERT_TRUE(cluster.started()) << cluster.log();
  const auto start = std::chrono::steady_clock::now();

  // The sweep: 2 draws x 1 trial x test environments 0 and 5, a few steps each.
  const std::string sweep_dir = dir.File("sweep");
  const std::string launch = cluster.With(
      Moa() + " sweep launch --config " + Tiny() +
      " --data.test_envs 0,5 --n_hparams 2 --n_trials 1 --launcher slurm --output.dir " +
      sweep_dir +
      " --train.steps=6 --train.checkpoint_freq=3 --slurm.cpus_per_task=1 --slurm.time=00:10:00");
  std::string out;
  ASSERT_EQ(test::RunShell(launch, &out), 0) << out;
  const std::string job = SubmittedJob(out);
  ASSERT_FALSE(job.empty()) << out;
  const bool finished = cluster.WaitUntilGone(job, 180);
  std::string slurm_logs;
  test::RunShell("tail -n 20 " + sweep_dir + "/slurm/*.out", &slurm_logs);
  ASSERT_TRUE(finished) << cluster.Logs() << slurm_logs;

  const std::vector<std::string> runs = RunDirs(sweep_dir);
  ASSERT_EQ(runs.size(), 4u) << slurm_logs;
  // The oracle's expected cell per test env: the last record of each draw, the draw with the
  // highest test-domain `out` accuracy (the later draw on ties), its test-domain `in` accuracy.
  // Runs come in folder-name (hash) order, so ties are broken by the draw, not by that order.
  std::map<int64_t, std::tuple<double, int64_t, double>> oracle;  // env -> (validation, draw, test)
  std::set<std::pair<int64_t, int64_t>> seen;                     // (test env, draw)
  for (const std::string& run : runs) {
    EXPECT_TRUE(fs::exists(run + "/done")) << run << "\n" << slurm_logs;
    const std::vector<nlohmann::json> records = Records(run);
    ASSERT_EQ(records.size(), 3u) << run;
    EXPECT_EQ(records[0]["step"], 0);
    EXPECT_EQ(records[1]["step"], 3);
    EXPECT_EQ(records[2]["step"], 5);
    const nlohmann::json& args = records[2]["args"];
    ASSERT_EQ(args["test_envs"].size(), 1u);
    const int64_t env = args["test_envs"][0];
    const int64_t draw = args["hparams_seed"];
    seen.insert({env, draw});
    EXPECT_EQ(args["output_dir"], run);
    // Draw 0 keeps tiny.ini's lr; draw 1 draws its own.
    const double lr = records[2]["hparams"]["lr"].get<double>();
    EXPECT_EQ(lr == 1e-3, draw == 0) << run << " lr " << lr;
    EXPECT_NE(ReadAll(run + "/env.json").find("\"size\": 1"), std::string::npos);
    const std::string e = "env" + std::to_string(env);
    const double validation = records[2][e + "_out_acc"], test = records[2][e + "_in_acc"];
    if (!oracle.count(env) ||
        std::make_pair(validation, draw) >
            std::make_pair(std::get<0>(oracle[env]), std::get<1>(oracle[env]))) {
      oracle[env] = {validation, draw, test};
    }
  }
  EXPECT_EQ(seen, (std::set<std::pair<int64_t, int64_t>>{{0, 0}, {0, 1}, {5, 0}, {5, 1}}));

  ASSERT_EQ(test::RunShell(Moa() + " collect --input_dir " + sweep_dir, &out), 0) << out;
  EXPECT_NE(out.find("Total records: 12"), std::string::npos) << out;
  const std::string header =
      "-------- Dataset: RotatedFashionMNIST, model selection method: test-domain validation set "
      "(oracle)\n";
  const size_t at = out.find(header);
  ASSERT_NE(at, std::string::npos) << out;
  const size_t row = out.find("\nlora ", at) + 1;
  const std::string line = out.substr(row, out.find('\n', row) - row);
  auto cell = [&](int column) { return line.substr(column * 22, 20); };
  auto expected = [](double accuracy) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.1f +/- 0.0", 100 * accuracy);
    return std::string(text) + std::string(20 - std::strlen(text), ' ');
  };
  EXPECT_EQ(cell(1), expected(std::get<2>(oracle[0]))) << line;
  for (int column = 2; column <= 5; ++column)
    EXPECT_EQ(cell(column), std::string("X") + std::string(19, ' '));
  EXPECT_EQ(cell(6), expected(std::get<2>(oracle[5]))) << line;
  EXPECT_NE(out.find("-------- Averages, model selection method: leave-one-domain-out"),
            std::string::npos);

  // Relaunching the finished sweep submits nothing.
  ASSERT_EQ(test::RunShell(launch, &out), 0) << out;
  EXPECT_NE(out.find("nothing to launch"), std::string::npos) << out;
  EXPECT_EQ(SubmittedJob(out), "");
  int scripts = 0;
  for (const auto& e : fs::directory_iterator(sweep_dir + "/slurm")) {
    scripts += e.path().extension() == ".sbatch";
  }
  EXPECT_EQ(scripts, 1);

  // An MPI plugin this Slurm lacks is refused before anything is submitted.
  EXPECT_EQ(test::RunShell(cluster.With(Moa() + " sweep launch --config " + Tiny() +
                                        " --data.test_envs 0 --n_hparams 1 --n_trials 1 --launcher "
                                        "slurm --slurm.mpi=pmix_v99 --output.dir " +
                                        dir.File("bad_mpi")),
                           &out),
            1);
  EXPECT_NE(out.find("slurm.mpi = pmix_v99 is not an MPI plugin of this Slurm (srun --mpi=list: "),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("pmix"), std::string::npos) << out;
  EXPECT_EQ(SubmittedJob(out), "");
  EXPECT_TRUE(RunDirs(dir.File("bad_mpi")).empty()) << "a refused launch left run directories";

  // Requeue: a longer run, killed after a few checkpoints, requeued, resumed.
  const std::string long_dir = dir.File("long");
  const std::string long_launch =
      cluster.With(Moa() + " sweep launch --config " + Tiny() +
                   " --data.test_envs 0 --n_hparams 1 --n_trials 1 --launcher slurm --output.dir " +
                   long_dir + " --train.steps=1500 --train.checkpoint_freq=25");
  ASSERT_EQ(test::RunShell(long_launch, &out), 0) << out;
  const std::string long_job = SubmittedJob(out);
  ASSERT_FALSE(long_job.empty()) << out;
  // While its task is queued or running, launching the sweep again leaves it alone.
  ASSERT_EQ(test::RunShell(long_launch, &out), 0) << out;
  EXPECT_NE(out.find("still queued or running as Slurm job " + long_job + "_0"), std::string::npos)
      << out;
  EXPECT_EQ(SubmittedJob(out), "") << out;
  ASSERT_TRUE(WaitFor([&] { return RunDirs(long_dir).size() == 1; }, 10));
  const std::string run = RunDirs(long_dir)[0];
  ASSERT_TRUE(WaitFor([&] { return Records(run).size() >= 2; }, 120)) << cluster.Logs();
  const pid_t pid = TrainingProcess(run);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  const std::string task = long_job + "_0";
  ASSERT_TRUE(WaitFor(
      [&] {
        std::string queue;
        test::RunShell(cluster.With("squeue -h -j " + long_job), &queue);
        return queue.find(long_job) == std::string::npos;
      },
      60))
      << cluster.Logs();
  EXPECT_FALSE(fs::exists(run + "/done"));
  const size_t records_at_kill = Records(run).size();
  ASSERT_LT(records_at_kill, 61u) << "the run finished before it was killed";
  ASSERT_EQ(test::RunShell(cluster.With("scontrol requeue " + task), &out), 0) << out;
  // A requeued job waits two minutes by default (its begin time); start it now.
  ASSERT_EQ(
      test::RunShell(cluster.With("scontrol update JobId=" + task + " StartTime=now+2"), &out), 0)
      << out;
  ASSERT_TRUE(WaitFor([&] { return fs::exists(run + "/done"); }, 150)) << cluster.Logs();
  const std::string log = ReadAll(long_dir + "/slurm/" + task + ".out");
  EXPECT_NE(log.find("resuming " + run + " from its last checkpoint (restart 1)"),
            std::string::npos)
      << log;
  std::smatch resumed;
  ASSERT_TRUE(std::regex_search(log, resumed, std::regex("resumed \\S+ after step ([0-9]+)")))
      << log;
  const int64_t resumed_after = std::stoll(resumed[1]);
  EXPECT_GT(resumed_after, 0);
  EXPECT_EQ(resumed_after % 25, 0);
  // Every evaluation once, in order: 0, 25, ..., 1475 and the last step 1499.
  const std::vector<nlohmann::json> records = Records(run);
  ASSERT_EQ(records.size(), 61u);
  for (size_t i = 0; i + 1 < records.size(); ++i) {
    EXPECT_EQ(records[i]["step"].get<int64_t>(), static_cast<int64_t>(25 * i));
  }
  EXPECT_EQ(records.back()["step"], 1499);
  std::printf("slurm round trip and requeue: %.0f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

// A task of two ranks (srun --mpi=pmix) whose rank 1 dies mid-run, killed (SIGKILL, as the
// kernel's out-of-memory killer ends a process) or by an error (an exception: moa aborts the
// job), ends at once instead of leaving rank 0 waiting in a collective until the time limit, and
// is not requeued.
TEST(SlurmTest, TwoRankTaskEndsWhenOneRankDies) {
  test::TempDir dir;
  LocalCluster cluster(dir.File("cluster"));
  ASSERT_TRUE(cluster.started()) << cluster.log();
  const std::pair<std::string, std::string> cases[] = {
      {"kill", "task 1: Killed"}, {"throw", "injected fault (MOA_INJECT_FAULT) at step 20"}};
  for (const auto& [kind, said] : cases) {
    const std::string sweep = dir.File("sweep_" + kind);
    std::string out;
    ASSERT_EQ(test::RunShell(cluster.With("MOA_INJECT_FAULT=1:20:" + kind + " " + Moa() +
                                          " sweep launch --config " + Tiny() +
                                          " --data.test_envs 0 --n_hparams 1 --n_trials 1 "
                                          "--launcher slurm --output.dir " +
                                          sweep +
                                          " --slurm.ntasks_per_node=2 --slurm.cpus_per_task=1 "
                                          "--slurm.time=00:05:00 --train.threads=1 "
                                          "--train.steps=400 --train.checkpoint_freq=100"),
                             &out),
              0)
        << out;
    const std::string job = SubmittedJob(out);
    ASSERT_FALSE(job.empty()) << out;
    const auto start = std::chrono::steady_clock::now();
    const bool ended = cluster.WaitUntilGone(job, 90);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string log = ReadAll(sweep + "/slurm/" + job + "_0.out");
    if (!ended) test::RunShell(cluster.With("scancel " + job), &out);
    ASSERT_TRUE(ended) << kind << ": the surviving rank was left waiting\n"
                       << log << cluster.Logs();
    ASSERT_EQ(RunDirs(sweep).size(), 1u);
    const std::string run = RunDirs(sweep)[0];
    EXPECT_NE(ReadAll(run + "/env.json").find("\"size\": 2"), std::string::npos)
        << ReadAll(run + "/env.json");
    EXPECT_FALSE(fs::exists(run + "/done"));
    EXPECT_NE(log.find(said), std::string::npos) << kind << "\n" << log;
    EXPECT_EQ(log.find("requeueing"), std::string::npos) << log;
    std::printf("two-rank task whose rank 1 died (%s) ended %.1f s after submission\n",
                kind.c_str(), seconds);
  }
}

// Preemption: Slurm's warning signal (here sent at once with `scancel --signal=USR1`, as
// `#SBATCH --signal` would before the time limit) reaches the task; moa finishes its step, saves
// its state and exits 75; the script requeues the task, which resumes. The results equal an
// uninterrupted run of the same configuration, record for record.
TEST(SlurmTest, WarningSignalSavesRequeuesAndResumesExactly) {
  test::TempDir dir;
  LocalCluster cluster(dir.File("cluster"));
  ASSERT_TRUE(cluster.started()) << cluster.log();
  const std::string sweep = dir.File("sweep");
  std::string out;
  ASSERT_EQ(
      test::RunShell(
          cluster.With(Moa() + " sweep launch --config " + Tiny() +
                       " --data.test_envs 0 --n_hparams 1 --n_trials 1 "
                       "--launcher slurm --output.dir " +
                       sweep + " --train.steps=1500 --train.checkpoint_freq=25 --train.threads=1"),
          &out),
      0)
      << out;
  const std::string job = SubmittedJob(out);
  ASSERT_FALSE(job.empty()) << out;
  const std::string task = job + "_0";
  ASSERT_TRUE(WaitFor([&] { return RunDirs(sweep).size() == 1; }, 10));
  const std::string run = RunDirs(sweep)[0];
  ASSERT_TRUE(WaitFor([&] { return Records(run).size() >= 2; }, 120)) << cluster.Logs();
  ASSERT_EQ(test::RunShell(cluster.With("scancel --signal=USR1 " + task), &out), 0) << out;
  const std::string log_path = sweep + "/slurm/" + task + ".out";
  ASSERT_TRUE(
      WaitFor([&] { return ReadAll(log_path).find("requeueing") != std::string::npos; }, 120))
      << ReadAll(log_path) << cluster.Logs();
  EXPECT_NE(ReadAll(log_path).find("stopped on a stop signal"), std::string::npos)
      << ReadAll(log_path);
  // A requeued job waits two minutes by default (its begin time). The script prints
  // "requeueing" before it calls `scontrol requeue`, and the requeue sets that begin time, so an
  // earlier update would be overwritten: start the task soon whenever Slurm holds it for that.
  // Not "now": slurmd refuses a launch whose credential dates from the same second as the old
  // run's revoked one ("Job credential revoked"), and the task would end instead of restarting.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::string state;
        test::RunShell(cluster.With("squeue -h -o '%T %r' -j " + task), &state);
        if (state.find("PENDING BeginTime") != std::string::npos) {
          std::string update;
          test::RunShell(cluster.With("scontrol update JobId=" + task + " StartTime=now+2"),
                         &update);
        }
        return fs::exists(run + "/done");
      },
      180))
      << cluster.Logs();
  const std::string log = ReadAll(log_path);
  EXPECT_NE(log.find("resuming " + run + " from its last checkpoint (restart 1)"),
            std::string::npos)
      << log;

  // The same configuration without the interruption (its config.ini, resumed-from cleared).
  const std::string whole = dir.File("whole");
  ASSERT_EQ(test::RunShell(Moa() + " train --config " + run +
                               "/config.ini --train.resume= " + "--output.dir=" + whole,
                           &out),
            0)
      << out;
  const std::vector<nlohmann::json> a = Records(whole), b = Records(run);
  ASSERT_EQ(a.size(), 61u);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    for (auto it = a[i].begin(); it != a[i].end(); ++it) {
      if (it.key().find("loss") != std::string::npos ||
          it.key().find("_acc") != std::string::npos) {
        EXPECT_EQ(it.value().dump(), b[i][it.key()].dump()) << it.key() << " at record " << i;
      }
    }
  }
}

}  // namespace
}  // namespace moa
