// Output safety with the real `moa`: a folder that holds a finished run is refused (naming the
// folder and both ways out) and left as it was; --output.overwrite=true starts afresh; a lock
// held by a live process keeps a second run out, naming its owner; a lock whose process is gone
// is taken over.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "parallel/device.h"
#include "tests/support/test_support.h"

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

}  // namespace
}  // namespace moa::trainer
