// Whole jobs under mpirun: data-parallel training equals one process (dp = 2 and 4, MoA with
// router noise, Kronecker dropout and the auxiliary loss on; and on an image folder with
// augmentation on), so does expert-parallel training (ep = 2, 4 and dp 2 x ep 2, with a capacity
// that drops assignments), checkpoints move between ep layouts, and a job stopped by a signal
// resumes exactly. Failing ranks: failure_test.cc.
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "tests/data/image_fixtures.h"
#include "tests/parallel/job_support.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

using test::ExpectSameRun;
using test::Moa;
using test::Mpirun;
using test::TinyMoa;
using test::WaitFor;

class DataParallelTest : public ::testing::TestWithParam<int> {};

TEST_P(DataParallelTest, EqualsOneProcess) {
  const int np = GetParam();
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + TinyMoa(dir.File("one")), &out), 0) << out;
  ASSERT_EQ(test::RunShell(Mpirun(np) + Moa() + TinyMoa(dir.File("many")), &out), 0) << out;
  ExpectSameRun(dir.File("one"), dir.File("many"));
}

INSTANTIATE_TEST_SUITE_P(Ranks, DataParallelTest, ::testing::Values(2, 4));

// The same with LoRA experts, which run stacked (moa.dispatch = auto): the noise rows, capacity
// and load-balancing sums of the global batch hold there too.
class StackedMoaDataParallelTest : public ::testing::TestWithParam<int> {};

TEST_P(StackedMoaDataParallelTest, EqualsOneProcess) {
  const int np = GetParam();
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + test::TinyLoraMoa(dir.File("one")), &out), 0) << out;
  ASSERT_EQ(test::RunShell(Mpirun(np) + Moa() + test::TinyLoraMoa(dir.File("many")), &out), 0)
      << out;
  const auto records = test::ReadJsonLines(dir.File("one/results.jsonl"));
  ASSERT_FALSE(records.empty());
  EXPECT_GT(records.back()["router"][0]["dropped"].get<int64_t>(), 0) << "no drops to compare";
  ExpectSameRun(dir.File("one"), dir.File("many"));
}

INSTANTIATE_TEST_SUITE_P(Ranks, StackedMoaDataParallelTest, ::testing::Values(2, 4));

// The same on an image folder (configs/tiny_images.ini: decode threads, the training transform
// on): each rank decodes and augments only its slice of every domain's global minibatch, with
// parameters keyed by (seed, step, domain, position in the global minibatch), and evaluates its
// shard of every split, so the ranks train and score exactly as one process does. An
// augmentation drawn per rank, or keyed by a rank-local position, changes the losses.
class ImageDataParallelTest : public ::testing::TestWithParam<int> {};

TEST_P(ImageDataParallelTest, EqualsOneProcess) {
  const int np = GetParam();
  test::TempDir dir;
  data::test::WriteImageFolder(dir.File("data"), {"a", "b", "c"}, {"x", "y", "z"}, 3);
  const std::string train = " train --config " + test::SourceDir() +
                            "/configs/tiny_images.ini --data.data_dir=" + dir.File("data") +
                            " --output.dir=";
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + train + dir.File("one"), &out), 0) << out;
  ASSERT_EQ(test::RunShell(Mpirun(np) + Moa() + train + dir.File("many"), &out), 0) << out;
  ExpectSameRun(dir.File("one"), dir.File("many"), /*routed=*/false);
}

INSTANTIATE_TEST_SUITE_P(Ranks, ImageDataParallelTest, ::testing::Values(2, 4));

// The SWAD records (the last line of results.jsonl) of two runs: the same valley, accuracies
// exactly, losses to 1e-4 relative.
void ExpectSameSwadRecord(const std::string& one_dir, const std::string& many_dir) {
  const nlohmann::json a = test::ReadJsonLines(one_dir + "/results.jsonl").back();
  const nlohmann::json b = test::ReadJsonLines(many_dir + "/results.jsonl").back();
  ASSERT_TRUE(a.value("swad", false));
  ASSERT_TRUE(b.value("swad", false));
  EXPECT_EQ(a["swad_start_step"], b["swad_start_step"]);
  EXPECT_EQ(a["swad_end_step"], b["swad_end_step"]);
  for (auto it = a.begin(); it != a.end(); ++it) {
    if (it.key().find("_acc") != std::string::npos) {
      EXPECT_EQ(it.value(), b[it.key()]) << it.key();
    }
    if (it.key().find("_loss") != std::string::npos) {
      EXPECT_NEAR(it.value().get<double>(), b[it.key()].get<double>(),
                  1e-4 * it.value().get<double>())
          << it.key();
    }
  }
}

TEST(DataParallelSwadTest, TwoRanksEqualOneProcess) {
  test::TempDir dir;
  std::string out;
  const std::string args = " --swad.enabled=true --train.steps=40 --train.checkpoint_freq=4";
  ASSERT_EQ(test::RunShell(Moa() + TinyMoa(dir.File("one")) + args, &out), 0) << out;
  ASSERT_EQ(test::RunShell(Mpirun(2) + Moa() + TinyMoa(dir.File("two")) + args, &out), 0) << out;
  ExpectSameSwadRecord(dir.File("one"), dir.File("two"));
}

// Evaluations of a resumed run after step 10 (steps 10, 15 and 19) depend only on the parameters:
// equal to those of the uninterrupted run to 1e-5 relative (losses) and exactly (accuracies).
void ExpectResumedEvaluationsMatch(const std::string& whole_dir, const std::string& part_dir) {
  const auto whole = test::ReadJsonLines(whole_dir + "/results.jsonl");
  const auto part = test::ReadJsonLines(part_dir + "/results.jsonl");
  int compared = 0;
  for (const auto& a : whole) {
    for (const auto& b : part) {
      if (a["step"] != b["step"] || a["step"].get<int64_t>() < 10) continue;
      ++compared;
      for (auto it = a.begin(); it != a.end(); ++it) {
        if (it.key().rfind("env", 0) != 0) continue;
        const double x = it.value().get<double>(), y = b[it.key()].get<double>();
        if (it.key().find("_acc") != std::string::npos) {
          EXPECT_EQ(x, y) << it.key() << " at step " << a["step"];
        } else {
          EXPECT_NEAR(x, y, 1e-5 * std::abs(x)) << it.key() << " at step " << a["step"];
        }
      }
    }
  }
  EXPECT_EQ(compared, 3);
}

TEST(DataParallelResumeTest, ResumedJobMatchesUninterrupted) {
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(
      test::RunShell(Mpirun(2) + Moa() + TinyMoa(dir.File("whole")) + " --train.steps=20", &out), 0)
      << out;
  ASSERT_EQ(
      test::RunShell(Mpirun(2) + Moa() + TinyMoa(dir.File("part")) + " --train.steps=10", &out), 0)
      << out;
  ASSERT_EQ(
      test::RunShell(
          Mpirun(2) + Moa() + " train --resume " + dir.File("part") + " --train.steps=20", &out),
      0)
      << out;
  ExpectResumedEvaluationsMatch(dir.File("whole"), dir.File("part"));
}

// Expert parallelism: the tiny MoA configuration with Kronecker experts, router noise, top-2, the
// auxiliary loss and a capacity that drops assignments, its experts sharded over ep ranks. The
// capacity factor is one where no routing decision of these 12 steps is a near-tie: where two
// experts' probabilities differ by float noise, reduction order may pick either, and with every
// expert at capacity the drop counts would not show the flip (0.6 has one at step 9).
std::string TinyShardedMoa(const std::string& dir, int ep, const std::string& mode = "sharded") {
  return " train --config " + test::SourceDir() +
         "/configs/tiny.ini --adapter.method=moa --moa.expert=kronecker --moa.phm_dim=8 "
         "--moa.top_k=2 --moa.noise=true --moa.kron_dropout=0.5 --moa.aux_loss=true "
         "--moa.proj_dim=16 --moa.capacity_factor=0.8 --train.threads=1 --parallel.ep=" +
         std::to_string(ep) + " --parallel.expert_mode=" + mode + " --output.dir=" + dir;
}

struct Layout {
  int np;
  int ep;
};

class ExpertParallelTest : public ::testing::TestWithParam<Layout> {};

TEST_P(ExpertParallelTest, EqualsOneProcess) {
  const Layout layout = GetParam();
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + TinyShardedMoa(dir.File("one"), 1), &out), 0) << out;
  ASSERT_EQ(
      test::RunShell(Mpirun(layout.np) + Moa() + TinyShardedMoa(dir.File("many"), layout.ep), &out),
      0)
      << out;
  EXPECT_NE(out.find("sharded (parallel.expert_mode)"), std::string::npos) << out;
  // The capacity must have dropped assignments, or the test would not cover dropping.
  const auto records = test::ReadJsonLines(dir.File("one/results.jsonl"));
  ASSERT_FALSE(records.empty());
  EXPECT_GT(records.back()["router"][0]["dropped"].get<int64_t>(), 0);
  ExpectSameRun(dir.File("one"), dir.File("many"));
}

INSTANTIATE_TEST_SUITE_P(Layouts, ExpertParallelTest,
                         ::testing::Values(Layout{2, 2}, Layout{4, 4}, Layout{4, 2}),
                         [](const ::testing::TestParamInfo<Layout>& info) {
                           return "dp" + std::to_string(info.param.np / info.param.ep) + "_ep" +
                                  std::to_string(info.param.ep);
                         });

// An MPI that provides MPI_THREAD_SERIALIZED (asked for through MOA_MPI_THREAD_LEVEL) gets its
// gradient buckets all-reduced on the backward thread, beside the sharded experts' all-to-alls and
// the auxiliary loss's all-reduce, never at the same time: the job completes, says so once, and
// equals the same job at MPI_THREAD_MULTIPLE. Below MPI_THREAD_SERIALIZED the job is refused.
TEST(MpiThreadLevelTest, SerializedRunsTheSameJobAndFunneledIsRefused) {
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Mpirun(2) + Moa() + TinyShardedMoa(dir.File("multiple"), 2), &out), 0)
      << out;
  EXPECT_EQ(out.find("not MPI_THREAD_MULTIPLE"), std::string::npos) << out;
  ASSERT_EQ(test::RunShell(Mpirun(2) + "-x MOA_MPI_THREAD_LEVEL=serialized " + Moa() +
                               TinyShardedMoa(dir.File("serialized"), 2),
                           &out),
            0)
      << out;
  const std::string line =
      "MPI provides MPI_THREAD_SERIALIZED, not MPI_THREAD_MULTIPLE: gradient buckets are "
      "all-reduced on the backward thread";
  const size_t first = out.find(line);
  EXPECT_NE(first, std::string::npos) << out;
  EXPECT_EQ(out.find(line, first + 1), std::string::npos) << "rank 0 alone says it\n" << out;
  ExpectSameRun(dir.File("multiple"), dir.File("serialized"));

  const test::Ended refused = test::RunTimed(Mpirun(2) + "-x MOA_MPI_THREAD_LEVEL=funneled " +
                                             Moa() + TinyShardedMoa(dir.File("funneled"), 2));
  EXPECT_NE(refused.code, 0) << refused.output;
  EXPECT_NE(refused.output.find("MPI provides only MPI_THREAD_FUNNELED (asked for "
                                "MPI_THREAD_FUNNELED), but moa calls MPI from the backward "
                                "pass's thread: it needs MPI_THREAD_SERIALIZED"),
            std::string::npos)
      << refused.output;
  EXPECT_FALSE(std::filesystem::exists(dir.File("funneled/results.jsonl")));
}

// bf16 autocast with sharded LoRA experts: holders send back one dtype whether or not tokens
// reached them, and MPI moves bfloat16; the job follows one process within bfloat16's rounding
// summed in different orders (1e-3 relative on every record's loss).
TEST(ExpertParallelBf16Test, TwoRanksFollowOneProcess) {
  test::TempDir dir;
  std::string out;
  const std::string run = " train --config " + test::SourceDir() +
                          "/configs/tiny.ini --adapter.method=moa --moa.proj_dim=16 "
                          "--train.threads=1 --train.precision=bf16 "
                          "--parallel.expert_mode=sharded --output.dir=";
  ASSERT_EQ(test::RunShell(Moa() + run + dir.File("one") + " --parallel.ep=1", &out), 0) << out;
  ASSERT_EQ(test::RunShell(Mpirun(2) + Moa() + run + dir.File("two") + " --parallel.ep=2", &out), 0)
      << out;
  test::ExpectLossesNear(dir.File("two"), dir.File("one"), 1e-3);
}

// SWAD (which averages every rank's copy of every expert each step) and AdamW (whose state the
// holders copy for checkpoints) with sharded experts.
TEST(ExpertParallelSwadTest, SwadWithAdamwEqualsOneProcess) {
  test::TempDir dir;
  std::string out;
  const std::string args =
      " --swad.enabled=true --train.steps=40 --train.checkpoint_freq=4 --optim.optimizer=adamw";
  ASSERT_EQ(test::RunShell(Moa() + TinyShardedMoa(dir.File("one"), 1) + args, &out), 0) << out;
  ASSERT_EQ(test::RunShell(Mpirun(2) + Moa() + TinyShardedMoa(dir.File("two"), 2) + args, &out), 0)
      << out;
  ExpectSameSwadRecord(dir.File("one"), dir.File("two"));
}

// parallel.expert_mode = auto on three ranks (a world that does not divide the planner's
// measurement buffers evenly): the job measures the machine, prints each layer's estimate and
// choice, and still equals one process.
TEST(ExpertParallelAutoTest, ThreeRanksPlanAndEqualOneProcess) {
  test::TempDir dir;
  std::string out;
  const std::string args = " --data.batch_size=6";
  ASSERT_EQ(test::RunShell(Moa() + TinyShardedMoa(dir.File("one"), 1, "auto") + args, &out), 0)
      << out;
  ASSERT_EQ(
      test::RunShell(Mpirun(3) + Moa() + TinyShardedMoa(dir.File("three"), 3, "auto") + args, &out),
      0)
      << out;
  EXPECT_NE(out.find("MoA layer 0 (32 -> 96, experts on ep ranks"), std::string::npos) << out;
  EXPECT_NE(out.find(" ms (experts "), std::string::npos) << "no estimate printed: " << out;
  ExpectSameRun(dir.File("one"), dir.File("three"));
}

// A run saved with ep = 2 resumes with ep = 1 and with ep = 4: the checkpoint's experts have the
// same layout at any ep.
TEST(ExpertParallelResumeTest, CheckpointReshardsAcrossEp) {
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(
      test::RunShell(Moa() + TinyShardedMoa(dir.File("whole"), 1) + " --train.steps=20", &out), 0)
      << out;
  ASSERT_EQ(test::RunShell(
                Mpirun(2) + Moa() + TinyShardedMoa(dir.File("ep2"), 2) + " --train.steps=10", &out),
            0)
      << out;
  std::filesystem::copy(dir.File("ep2"), dir.File("to_ep1"),
                        std::filesystem::copy_options::recursive);
  std::filesystem::copy(dir.File("ep2"), dir.File("to_ep4"),
                        std::filesystem::copy_options::recursive);
  ASSERT_EQ(test::RunShell(Moa() + " train --resume " + dir.File("to_ep1") +
                               " --train.steps=20 --parallel.ep=1",
                           &out),
            0)
      << out;
  ExpectResumedEvaluationsMatch(dir.File("whole"), dir.File("to_ep1"));
  ASSERT_EQ(test::RunShell(Mpirun(4) + Moa() + " train --resume " + dir.File("to_ep4") +
                               " --train.steps=20 --parallel.ep=4",
                           &out),
            0)
      << out;
  ExpectResumedEvaluationsMatch(dir.File("whole"), dir.File("to_ep4"));
}

// A stop signal to one rank (as Slurm's --signal or `scancel --signal` deliver it to the tasks)
// stops every rank at the same step: the job saves its full state, with the sharded experts
// (ep = 2) refreshed from their holders, exits with kPreemptedExitCode (75), and `--resume` under
// mpirun continues as if uninterrupted. The baseline is the same two-rank job, so the two runs
// reduce in the same order.
TEST(StopTest, SignalToOneRankStopsTheJobAndItResumesExactly) {
  test::TempDir dir;
  const std::string run = dir.File("stopped");
  const std::string more = " --train.steps=30 --train.checkpoint_freq=10";
  std::string out;
  ASSERT_EQ(test::RunShell(Mpirun(2) + Moa() + TinyShardedMoa(dir.File("whole"), 2) + more, &out),
            0)
      << out;
  const std::string log = dir.File("job.log"), status = dir.File("job.status");
  const std::string job = Mpirun(2) + Moa() + TinyShardedMoa(run, 2) + more;
  ASSERT_EQ(
      std::system(("(" + job + " > " + log + " 2>&1; echo $? > " + status + ") > /dev/null 2>&1 &")
                      .c_str()),
      0);
  ASSERT_TRUE(WaitFor(
      [&] {
        return test::ReadProcFile(run + "/results.jsonl").find('\n') != std::string::npos ||
               std::filesystem::exists(status);
      },
      60.0));
  ASSERT_FALSE(std::filesystem::exists(status)) << "the job ended before the signal";
  pid_t rank1 = 0;
  for (const test::RankProcess& p : test::MoaProcesses(run)) {
    if (p.rank == 1) rank1 = p.pid;
  }
  ASSERT_GT(rank1, 0) << "no moa process of rank 1 found";
  ASSERT_EQ(::kill(rank1, SIGUSR1), 0);
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(status); }, 60.0))
      << "the job did not stop";
  int code = -1;
  std::ifstream(status) >> code;
  const std::string output = test::ReadProcFile(log);
  EXPECT_EQ(code, 75) << output;
  EXPECT_NE(output.find("stopped on a stop signal (SIGUSR1 or SIGTERM) after step"),
            std::string::npos)
      << output;
  EXPECT_FALSE(std::filesystem::exists(run + "/done"));
  EXPECT_FALSE(std::filesystem::exists(run + "/moa.lock"));
  ASSERT_TRUE(std::filesystem::exists(run + "/checkpoints/state.safetensors"));

  ASSERT_EQ(test::RunShell(Mpirun(2) + Moa() + " train --resume " + run, &out), 0) << out;
  ExpectSameRun(dir.File("whole"), run);
}

}  // namespace
}  // namespace moa
