// Checkpoints under faults, with the real `moa` executable: SIGKILL at every stage inside the
// writes of state.safetensors, selected.safetensors and results.jsonl (MOA_INJECT_WRITE_FAULT)
// never leaves an unreadable file, and `--resume` then ends equal to an uninterrupted run; a full
// disk (injected, and a real tmpfs filled up) is an error naming the file, with the previous
// checkpoint intact.
#include <sys/mount.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "tests/parallel/job_support.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

namespace fs = std::filesystem;

// The tiny configuration with a learning rate that improves the selection criterion often, so
// that selected.safetensors is rewritten; evaluations (and full-state saves) at 0, 5, ..., 29.
std::string TinyRun(const std::string& dir, const std::string& extra = "") {
  return test::Moa() + " train --config " + test::SourceDir() +
         "/configs/tiny.ini --optim.lr=1e-2 --train.steps=30 --train.checkpoint_freq=5 "
         "--output.dir=" +
         dir + extra;
}

int64_t SavedStep(const std::string& path) {
  auto file = ReadSafetensors(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return -1;
  return std::stoll(file->metadata.at("moa_step"));
}

// Every line of results.jsonl is a whole JSON record (ReadJsonLines fails the test otherwise).
size_t RecordCount(const std::string& run) {
  return test::ReadJsonLines(run + "/results.jsonl").size();
}

struct KillPoint {
  std::string file;
  std::string stage;
  int nth;
};

std::vector<KillPoint> KillPoints() {
  const std::vector<std::string> stages = {
      "created",   "payload1", "payload10", "payload25", "payload50", "payload75", "payload90",
      "payload99", "written",  "synced",    "closed",    "renamed",   "dirsynced"};
  std::vector<KillPoint> points;
  // The second write of each checkpoint replaces one that exists.
  for (const char* file : {"state.safetensors", "selected.safetensors"}) {
    for (const std::string& stage : stages) points.push_back({file, stage, 2});
  }
  for (const char* stage : {"payload50", "closed", "renamed"}) {
    points.push_back({"results.jsonl", stage, 3});
  }
  return points;
}

bool Renamed(const std::string& stage) { return stage == "renamed" || stage == "dirsynced"; }

TEST(CheckpointFaultTest, KillInsideCheckpointWritesLeavesReadableFilesAndResumesExactly) {
  test::TempDir dir;
  std::string out;
  const std::string whole = dir.File("whole");
  ASSERT_EQ(test::RunShell(TinyRun(whole), &out), 0) << out;
  const std::vector<KillPoint> points = KillPoints();
  ASSERT_GE(points.size(), 20u);
  for (size_t i = 0; i < points.size(); ++i) {
    const KillPoint& point = points[i];
    const std::string spec = point.file + ":" + point.stage + ":" + std::to_string(point.nth);
    SCOPED_TRACE(spec);
    const std::string run = dir.File("run" + std::to_string(i));
    ASSERT_EQ(test::RunShell("MOA_INJECT_WRITE_FAULT=" + spec + ":kill " + TinyRun(run), &out), 137)
        << out;
    ASSERT_NE(out.find("SIGKILL inside the write of " + point.file), std::string::npos) << out;
    ASSERT_FALSE(fs::exists(run + "/done"));
    // The state is the first one (step 0) until the second has its name (step 5).
    const int64_t state_step = SavedStep(run + "/checkpoints/state.safetensors");
    if (point.file == "state.safetensors") {
      EXPECT_EQ(state_step, Renamed(point.stage) ? 5 : 0);
    } else {
      EXPECT_GE(state_step, 0);
    }
    const int64_t selected_step = SavedStep(run + "/checkpoints/selected.safetensors");
    if (point.file == "selected.safetensors") {
      if (Renamed(point.stage)) {
        EXPECT_GT(selected_step, 0);
      } else {
        EXPECT_EQ(selected_step, 0);
      }
    }
    if (point.file == "results.jsonl") {
      EXPECT_EQ(RecordCount(run), Renamed(point.stage) ? 3u : 2u);
    }
    ASSERT_EQ(test::RunShell(test::Moa() + " train --resume " + run, &out), 0) << out;
    ASSERT_TRUE(fs::exists(run + "/done"));
    for (const auto& entry : fs::recursive_directory_iterator(run)) {
      EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
    }
    test::ExpectSameRun(whole, run, /*routed=*/false);
  }
}

TEST(CheckpointFaultTest, InjectedFullDiskNamesTheFileAndKeepsThePreviousCheckpoint) {
  test::TempDir dir;
  std::string out;
  const std::string whole = dir.File("whole");
  ASSERT_EQ(test::RunShell(TinyRun(whole), &out), 0) << out;
  for (const std::string spec : {"state.safetensors:payload50:2", "selected.safetensors:written:2",
                                 "results.jsonl:payload10:3"}) {
    SCOPED_TRACE(spec);
    const std::string run = dir.File(spec.substr(0, spec.find(':')));
    ASSERT_EQ(test::RunShell("MOA_INJECT_WRITE_FAULT=" + spec + ":enospc " + TinyRun(run), &out), 1)
        << out;
    const std::string file = spec.substr(0, spec.find(':'));
    EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
    EXPECT_NE(out.find(file + " keeps its previous contents"), std::string::npos) << out;
    for (const auto& entry : fs::recursive_directory_iterator(run)) {
      EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
    }
    if (file == "results.jsonl") {
      EXPECT_EQ(RecordCount(run), 2u);
    } else {
      EXPECT_EQ(SavedStep(run + "/checkpoints/" + file), 0);
    }
    ASSERT_EQ(test::RunShell(test::Moa() + " train --resume " + run, &out), 0) << out;
    test::ExpectSameRun(whole, run, /*routed=*/false);
  }
}

// A tmpfs the test mounts (needs root), filled up after the first full-state checkpoint.
TEST(CheckpointFaultTest, RealFullDiskEndsTheRunNamingTheFileAndItResumesOnceThereIsRoom) {
  test::TempDir dir;
  const std::string disk = dir.File("disk");
  fs::create_directories(disk);
  if (::mount("tmpfs", disk.c_str(), "tmpfs", 0, "size=2m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << std::strerror(errno);
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{disk};
  std::string out;
  const std::string whole = dir.File("whole");
  const std::string steps = " --train.steps=200";
  ASSERT_EQ(test::RunShell(TinyRun(whole, steps), &out), 0) << out;

  const std::string run = disk + "/run";
  test::Ended ended{};
  std::thread training([&] { ended = test::RunTimed(TinyRun(run, steps)); });
  const bool saved =
      test::WaitFor([&] { return fs::exists(run + "/checkpoints/state.safetensors"); }, 60);
  std::string filled;
  test::RunShell("dd if=/dev/zero of=" + disk + "/filler bs=4k", &filled);
  training.join();
  ASSERT_TRUE(saved) << ended.output;
  ASSERT_EQ(ended.code, 1) << ended.output;
  EXPECT_NE(ended.output.find("No space left on device"), std::string::npos) << ended.output;
  EXPECT_NE(ended.output.find(run + "/"), std::string::npos) << ended.output;
  EXPECT_NE(ended.output.find("keeps its previous contents"), std::string::npos) << ended.output;
  const int64_t saved_step = SavedStep(run + "/checkpoints/state.safetensors");
  EXPECT_GE(saved_step, 0);
  EXPECT_LT(saved_step, 199);
  EXPECT_GE(RecordCount(run), 1u);

  fs::remove(disk + "/filler");
  ASSERT_EQ(test::RunShell(test::Moa() + " train --resume " + run, &out), 0) << out;
  test::ExpectSameRun(whole, run, /*routed=*/false);
}

}  // namespace
}  // namespace moa
