// Output safety with the real `moa`: a folder that holds a finished run is refused (naming the
// folder and both ways out) and left as it was; --output.overwrite=true starts afresh; a lock
// held by a live process keeps a second run out, naming its owner; a lock whose process is gone
// is taken over, by one run of several started at once.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "parallel/device.h"
#include "tests/support/test_support.h"
#include "trainer/run_lock.h"

namespace moa::trainer {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string Train(const std::string& dir) {
  return test::BinaryDir() + "/moa train --config " + test::SourceDir() +
         "/configs/tiny.ini --train.steps=3 --train.checkpoint_freq=2 --output.dir=" + dir;
}

void WriteLock(const std::string& dir, int64_t pid) {
  std::filesystem::create_directories(dir);
  const nlohmann::json owner = {{"host", parallel::Hostname()}, {"pid", pid}, {"slurm", ""}};
  std::ofstream(dir + "/moa.lock") << owner.dump() << "\n";
}

TEST(RunDirTest, FinishedRunIsKeptUnlessOverwriteIsAskedFor) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  std::string out;
  ASSERT_EQ(test::RunShell(Train(run), &out), 0) << out;
  ASSERT_TRUE(std::filesystem::exists(run + "/done"));
  EXPECT_FALSE(std::filesystem::exists(run + "/moa.lock")) << "the lock outlived the run";
  const std::string results = ReadAll(run + "/results.jsonl");
  const auto stamp = std::filesystem::last_write_time(run + "/checkpoints/state.safetensors");

  EXPECT_NE(test::RunShell(Train(run), &out), 0);
  EXPECT_NE(out.find("output.dir " + run + " holds a run"), std::string::npos) << out;
  EXPECT_NE(out.find("moa train --resume " + run), std::string::npos) << out;
  EXPECT_NE(out.find("--output.overwrite=true"), std::string::npos) << out;
  EXPECT_EQ(ReadAll(run + "/results.jsonl"), results) << "the refused run touched the results";
  EXPECT_TRUE(std::filesystem::exists(run + "/done"));
  EXPECT_EQ(std::filesystem::last_write_time(run + "/checkpoints/state.safetensors"), stamp);

  // A stale checkpoint from before (a step file of an output.save = all run) goes too.
  std::ofstream(run + "/checkpoints/step99.safetensors") << "old";
  ASSERT_EQ(test::RunShell(Train(run) + " --output.overwrite=true", &out), 0) << out;
  EXPECT_FALSE(std::filesystem::exists(run + "/checkpoints/step99.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(run + "/done"));
  // The new run's records only (3 steps, evaluations at 0 and 2), not appended to the old ones.
  EXPECT_EQ(test::ReadJsonLines(run + "/results.jsonl").size(), 2u);
}

TEST(RunDirTest, LiveLockKeepsASecondRunOutAndAStaleOneIsTakenOver) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  // This test's own process: alive, on this host.
  WriteLock(run, getpid());
  std::string out;
  EXPECT_NE(test::RunShell(Train(run), &out), 0);
  EXPECT_NE(out.find("output.dir " + run + " is in use by another run"), std::string::npos) << out;
  EXPECT_NE(out.find("pid " + std::to_string(getpid())), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(run + "/results.jsonl"));
  EXPECT_TRUE(std::filesystem::exists(run + "/moa.lock")) << "a live owner's lock was removed";

  // A process that has ended: its lock is stale.
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  WriteLock(run, child);
  ASSERT_EQ(test::RunShell(Train(run), &out), 0) << out;
  EXPECT_NE(out.find("taking over the stale lock"), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::exists(run + "/done"));
  EXPECT_FALSE(std::filesystem::exists(run + "/moa.lock"));
}

// Six runs started at once on a folder whose lock is stale (its process has ended): exactly one
// takes the lock over and trains; every other one is refused, naming the live run or the run it
// left, and the results hold one run's records.
TEST(RunDirTest, RunsStartedAtOnceOnAStaleLockLeaveOneWinner) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  WriteLock(run, child);
  constexpr int kRuns = 6;
  std::string script;
  for (int i = 0; i < kRuns; ++i) {
    script += Train(run) + " --train.steps=20 --train.threads=1 >" + dir.File(std::to_string(i)) +
              " 2>&1; echo $? >" + dir.File(std::to_string(i) + ".rc") + " &\n";
  }
  script += "wait\n";
  std::ofstream(dir.File("start.sh")) << script;
  std::string out;
  ASSERT_EQ(test::RunShell("bash " + dir.File("start.sh"), &out), 0) << out;
  int trained = 0;
  for (int i = 0; i < kRuns; ++i) {
    const std::string output = ReadAll(dir.File(std::to_string(i)));
    if (ReadAll(dir.File(std::to_string(i) + ".rc")) == "0\n") {
      ++trained;
      continue;
    }
    EXPECT_TRUE(output.find("output.dir " + run + " is in use by another run") !=
                    std::string::npos ||
                output.find("output.dir " + run + " holds a run") != std::string::npos)
        << output;
  }
  EXPECT_EQ(trained, 1);
  // One run's evaluations: steps 0, 2, ..., 18 and the last, 19.
  EXPECT_EQ(test::ReadJsonLines(run + "/results.jsonl").size(), 11u);
  EXPECT_FALSE(std::filesystem::exists(run + "/moa.lock"));
  for (const auto& entry : std::filesystem::directory_iterator(run)) {
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(name.find("moa.lock.") == std::string::npos || name == "moa.lock.takeover")
        << "a private lock file was left: " << entry.path();
  }
}

// The same race made tight: eight processes released together on a stale lock, thirty times.
// Exactly one acquires it each time (a lock judged stale by several of them is taken over by one,
// and never removed from under the one that took it); every other one is told the folder is in
// use, while the winner still holds it.
TEST(RunDirTest, ProcessesReleasedAtOnceOnAStaleLockGiveOneOwner) {
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_GT(dead, 0);
  waitpid(dead, nullptr, 0);
  constexpr int kProcesses = 8;
  for (int round = 0; round < 30; ++round) {
    test::TempDir dir;
    const std::string run = dir.File("run");
    WriteLock(run, dead);
    int go[2], results[2], release[2];
    ASSERT_EQ(pipe(go), 0);
    ASSERT_EQ(pipe(results), 0);
    ASSERT_EQ(pipe(release), 0);
    std::vector<pid_t> children;
    for (int i = 0; i < kProcesses; ++i) {
      const pid_t child = fork();
      if (child == 0) {
        close(go[1]);
        close(release[1]);
        char byte = 0;
        (void)!read(go[0], &byte, 1);  // returns when the parent closes its end
        auto lock = RunLock::Acquire(run);
        byte = lock.ok() ? 'o'
               : lock.status().message().find("is in use by another run") != std::string::npos
                   ? 'r'
                   : 'e';
        (void)!write(results[1], &byte, 1);
        (void)!read(release[0], &byte, 1);  // holds the lock until the parent has counted
        _exit(0);
      }
      ASSERT_GT(child, 0);
      children.push_back(child);
    }
    close(go[0]);
    close(go[1]);
    std::string outcomes;
    char byte = 0;
    while (outcomes.size() < kProcesses && read(results[0], &byte, 1) == 1) outcomes += byte;
    std::vector<std::string> left;
    for (const auto& entry : std::filesystem::directory_iterator(run)) {
      left.push_back(entry.path().filename());
    }
    close(release[1]);
    for (pid_t child : children) waitpid(child, nullptr, 0);
    close(results[0]);
    close(results[1]);
    close(release[0]);
    ASSERT_EQ(std::count(outcomes.begin(), outcomes.end(), 'o'), 1)
        << outcomes << " round " << round;
    ASSERT_EQ(std::count(outcomes.begin(), outcomes.end(), 'r'), kProcesses - 1) << outcomes;
    std::sort(left.begin(), left.end());
    ASSERT_EQ(left, (std::vector<std::string>{"moa.lock", "moa.lock.takeover"}))
        << "round " << round;
  }
}

// A lock recording this process's own pid on this host was left by an earlier process that had
// the same pid (containers restart with the same pids): taken over.
TEST(RunDirTest, ALockWithThisProcesssPidIsAnEarlierProcesss) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  WriteLock(run, getpid());
  const std::string before = ReadAll(run + "/moa.lock");
  auto lock = RunLock::Acquire(run);
  MOA_ASSERT_OK(lock);
  EXPECT_NE(ReadAll(run + "/moa.lock"), before) << "this process's own record replaced it";
  // While this process holds it, its own lock is live to it too.
  auto second = RunLock::Acquire(run);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("is in use by another run"), std::string::npos)
      << second.status().message();
  EXPECT_TRUE(LiveLockOwner(run).has_value());
}

// A Slurm task's lock (here on another host) is taken over by the same task once Slurm has
// requeued it (a higher SLURM_RESTART_COUNT), never by another process of the same allocation.
TEST(RunDirTest, ARequeuedSlurmTaskTakesOverItsLock) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  std::filesystem::create_directories(run);
  const nlohmann::json owner = {
      {"host", "node-17"}, {"pid", 4242}, {"slurm", "77_3"}, {"slurm_restarts", 0}};
  std::ofstream(run + "/moa.lock") << owner.dump() << "\n";
  unsetenv("SLURM_JOB_ID");
  setenv("SLURM_ARRAY_JOB_ID", "77", 1);
  setenv("SLURM_ARRAY_TASK_ID", "3", 1);
  auto same_allocation = RunLock::Acquire(run);
  ASSERT_FALSE(same_allocation.ok());
  EXPECT_NE(same_allocation.status().message().find("host node-17, pid 4242, Slurm job 77_3"),
            std::string::npos)
      << same_allocation.status().message();
  setenv("SLURM_RESTART_COUNT", "1", 1);
  auto requeued = RunLock::Acquire(run);
  unsetenv("SLURM_ARRAY_JOB_ID");
  unsetenv("SLURM_ARRAY_TASK_ID");
  unsetenv("SLURM_RESTART_COUNT");
  MOA_ASSERT_OK(requeued);
}

// A lock that holds no owner record (left by a crash mid-write of an older moa, or made by hand)
// is taken over once this process has seen it unchanged for 2 s; a lock that its owner no longer
// holds (taken over meanwhile, as a requeued Slurm task does) is left in place when the old owner
// ends.
TEST(RunDirTest, IncompleteLocksAgeAndOwnersRemoveOnlyTheirOwnLock) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  std::filesystem::create_directories(run);
  std::ofstream(run + "/moa.lock") << "{\"host\": ";
  std::filesystem::last_write_time(
      run + "/moa.lock", std::filesystem::file_time_type::clock::now() - std::chrono::seconds(60));
  {
    auto lock = RunLock::Acquire(run);
    MOA_ASSERT_OK(lock);
    const std::string text = ReadAll(run + "/moa.lock");
    EXPECT_NE(text.find("\"pid\":" + std::to_string(getpid())), std::string::npos) << text;

    // Replaced under it: its end leaves the other lock alone.
    std::filesystem::remove(run + "/moa.lock");
    WriteLock(run, 1);
  }
  EXPECT_NE(ReadAll(run + "/moa.lock").find("\"pid\":1"), std::string::npos)
      << "the old owner removed a lock it no longer held";

  // A fresh incomplete lock is being written: waited for (2 s unchanged), not taken over at once.
  std::filesystem::remove(run + "/moa.lock");
  std::ofstream(run + "/moa.lock") << "";
  const auto start = std::chrono::steady_clock::now();
  auto lock = RunLock::Acquire(run);
  MOA_ASSERT_OK(lock);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

}  // namespace
}  // namespace moa::trainer
