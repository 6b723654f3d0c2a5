// A failing `moa train` rank ends the whole job quickly with the rank named: damaged data on one
// rank, a rank killed mid-training, a non-finite loss on every rank, and faults injected on one
// rank of four (MOA_INJECT_FAULT) after which the job resumes. No rank may be left waiting in a
// collective.
#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <thread>

#include "common/safetensors.h"
#include "tests/data/image_fixtures.h"
#include "tests/parallel/job_support.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

using test::Ended;
using test::Moa;
using test::MoaProcesses;
using test::Mpirun;
using test::MpirunOptions;
using test::RankProcess;
using test::ReadProcFile;
using test::RunTimed;
using test::TinyMoa;
using test::WaitFor;

// One rank of three reads a copy of the image folder whose JPEG files lost their last bytes (a
// node with a damaged copy of the data): the header check at start passes, so that rank fails
// while training, decoding its first damaged image, and the two ranks with good data, waiting in
// the gradient all-reduce, must not hang.
TEST(FailureTest, RankWithDamagedDataEndsTheJobNamingIt) {
  test::TempDir dir;
  data::test::WriteImageFolder(dir.File("data"), {"a", "b", "c"}, {"x", "y", "z"}, 3);
  std::filesystem::copy(dir.File("data"), dir.File("damaged"),
                        std::filesystem::copy_options::recursive);
  int damaged = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir.File("damaged"))) {
    if (entry.path().extension() != ".jpg") continue;
    std::filesystem::resize_file(entry.path(), entry.file_size() - 16);  // drops the end marker
    ++damaged;
  }
  ASSERT_GT(damaged, 0);
  const std::string train = Moa() + " train --config " + test::SourceDir() +
                            "/configs/tiny_images.ini --data.batch_size=6 --train.steps=50 " +
                            "--output.dir=" + dir.File("run") + " --data.data_dir=";
  // Open MPI's multiple-program form: ranks 0 and 2 read the good copy, rank 1 the damaged one.
  const Ended e = RunTimed(MpirunOptions() + "-np 1 " + train + dir.File("data") + " : -np 1 " +
                           train + dir.File("damaged") + " : -np 1 " + train + dir.File("data"));
  EXPECT_NE(e.code, 0);
  EXPECT_NE(e.code, 124) << "timed out: the ranks with good data hung";
  EXPECT_LT(e.seconds, 60.0);
  EXPECT_NE(e.output.find("rank 1 on"), std::string::npos) << e.output;
  EXPECT_NE(e.output.find("truncated JPEG"), std::string::npos) << e.output;
  EXPECT_EQ(e.output.find("rank 0 on"), std::string::npos) << e.output;
  EXPECT_EQ(e.output.find("rank 2 on"), std::string::npos) << e.output;
  EXPECT_FALSE(std::filesystem::exists(dir.File("run/done")));
}

// Rank 2 of a three-rank MoA training job is killed with SIGKILL once the run has written its
// first evaluation: the job must end soon after, with an error naming the rank, and leave no
// `moa` process of the run behind.
TEST(FailureTest, KilledRankEndsTheJobNamingIt) {
  test::TempDir dir;
  const std::string run = dir.File("run");
  const std::string log = dir.File("job.log"), status = dir.File("job.status");
  // Long enough that it is still training when killed; the job's own limit is mpirun's timeout.
  const std::string job = Mpirun(3) + Moa() + TinyMoa(run) +
                          " --data.batch_size=6 --train.steps=100000 --train.checkpoint_freq=5";
  ASSERT_EQ(
      std::system(("(" + job + " > " + log + " 2>&1; echo $? > " + status + ") > /dev/null 2>&1 &")
                      .c_str()),
      0);
  const bool training = WaitFor(
      [&] {
        // A whole line: rank 0 has written the first evaluation's record.
        return ReadProcFile(run + "/results.jsonl").find('\n') != std::string::npos ||
               std::filesystem::exists(status);
      },
      60.0);
  ASSERT_TRUE(training && !std::filesystem::exists(status))
      << "the job ended or wrote no evaluation:\n"
      << ReadProcFile(log);
  pid_t victim = 0;
  for (const RankProcess& p : MoaProcesses(run)) {
    if (p.rank == 2) victim = p.pid;
  }
  ASSERT_GT(victim, 0) << "no moa process of rank 2 found";
  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);

  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(status); }, 60.0))
      << "the job did not end after rank 2 was killed";
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_LT(seconds, 30.0);
  const std::string output = ReadProcFile(log);
  int code = -1;
  std::ifstream(status) >> code;
  EXPECT_NE(code, 0) << output;
  EXPECT_NE(code, 124) << "timed out: the surviving ranks hung\n" << output;
  EXPECT_NE(output.find("rank 2"), std::string::npos) << output;
  EXPECT_NE(output.find("signal 9"), std::string::npos) << output;
  EXPECT_FALSE(std::filesystem::exists(run + "/done"));
  EXPECT_TRUE(WaitFor([&] { return MoaProcesses(run).empty(); }, 10.0))
      << "ranks of the killed job are still running";
}

TEST(FailureTest, NanLossOnTwoRanksEndsTheJob) {
  test::TempDir dir;
  const Ended e = RunTimed(Mpirun(2) + Moa() + " train --config " + test::SourceDir() +
                           "/configs/tiny.ini --optim.lr=1e30 --output.dir=" + dir.File("nan"));
  EXPECT_NE(e.code, 0);
  EXPECT_LT(e.seconds, 30.0);
  EXPECT_NE(e.output.find("training loss is"), std::string::npos) << e.output;
  EXPECT_NE(e.output.find("rank "), std::string::npos) << e.output;
}

// MOA_INJECT_FAULT on rank 2 of 4 during step 12 (evaluations every 5 steps), by an exception,
// by SIGKILL and by a non-finite loss: each time the job ends within 30 s naming the cause (and
// the rank, where one rank alone knows it), every rank exits, the last full-state checkpoint
// (step 10) is intact, and `--resume` without the fault equals the uninterrupted job.
TEST(FailureTest, InjectedFaultsEndTheJobAndItResumesFromAnIntactCheckpoint) {
  test::TempDir dir;
  const std::string more = " --train.steps=20 --train.checkpoint_freq=5";
  std::string out;
  ASSERT_EQ(test::RunShell(Mpirun(4) + Moa() + TinyMoa(dir.File("whole")) + more, &out), 0) << out;
  struct Case {
    std::string kind;
    std::string says;
    bool names_rank;
  };
  for (const Case& c : {Case{"throw", "injected fault (MOA_INJECT_FAULT) at step 12", true},
                        Case{"kill", "signal 9", true},
                        Case{"nan", "training loss is not finite at step 12", false}}) {
    SCOPED_TRACE(c.kind);
    const std::string run = dir.File("fault_" + c.kind);
    const Ended e =
        RunTimed("MOA_INJECT_FAULT=2:12:" + c.kind + " " + Mpirun(4) + Moa() + TinyMoa(run) + more);
    EXPECT_NE(e.code, 0);
    EXPECT_NE(e.code, 124) << "timed out: ranks hung\n" << e.output;
    EXPECT_LT(e.seconds, 30.0);
    EXPECT_NE(e.output.find(c.says), std::string::npos) << e.output;
    if (c.names_rank) {
      EXPECT_NE(e.output.find("rank 2"), std::string::npos) << e.output;
    }
    EXPECT_FALSE(std::filesystem::exists(run + "/done"));
    EXPECT_TRUE(WaitFor([&] { return MoaProcesses(run).empty(); }, 10.0)) << "ranks left running";
    MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile state,
                             ReadSafetensors(run + "/checkpoints/state.safetensors"));
    EXPECT_EQ(state.metadata.at("moa_step"), "10");
    ASSERT_EQ(test::RunShell(Mpirun(4) + Moa() + " train --resume " + run, &out), 0) << out;
    test::ExpectSameRun(dir.File("whole"), run);
  }
}

}  // namespace
}  // namespace moa
