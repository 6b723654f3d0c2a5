// Whole jobs under mpirun: data-parallel training equals one process (dp = 2 and 4, MoA with
// router noise, Kronecker dropout and the auxiliary loss on), and a failing or killed rank ends
// the job quickly with the rank named.
#include <chrono>
#include <fstream>

#include <nlohmann/json.hpp>

#include "moa/safetensors.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

std::string Mpirun(int np) {
  return "timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none -np " +
         std::to_string(np) + " --mca btl_vader_single_copy_mechanism none ";
}

std::string Moa() { return test::BinaryDir() + "/moa"; }

std::vector<nlohmann::json> Records(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The tiny configuration with everything random switched on.
std::string TinyMoa(const std::string& dir) {
  return " train --config " + test::SourceDir() +
         "/configs/tiny.ini --adapter.method=moa --moa.expert=kronecker --moa.phm_dim=8 "
         "--moa.top_k=2 --moa.noise=true --moa.kron_dropout=0.5 --moa.aux_loss=true "
         "--moa.proj_dim=16 "
         "--train.check_replicas=true --train.threads=1 --output.dir=" +
         dir;
}

class DataParallelTest : public ::testing::TestWithParam<int> {};

TEST_P(DataParallelTest, EqualsOneProcess) {
  const int np = GetParam();
  test::TempDir dir;
  std::string out;
  ASSERT_EQ(test::RunShell(Moa() + TinyMoa(dir.File("one")), &out), 0) << out;
  ASSERT_EQ(test::RunShell(Mpirun(np) + Moa() + TinyMoa(dir.File("many")), &out), 0) << out;
  const auto one = Records(dir.File("one/results.jsonl"));
  const auto many = Records(dir.File("many/results.jsonl"));
  ASSERT_EQ(one.size(), many.size());
  ASSERT_FALSE(one.empty());
  // Tolerance: losses and evaluation losses to 1e-4 relative (float sums in another order);
  // accuracies (correct counts / totals) exactly; router assignment shares exactly.
  for (size_t i = 0; i < one.size(); ++i) {
    for (auto it = one[i].begin(); it != one[i].end(); ++it) {
      const std::string& key = it.key();
      if (key.find("_acc") != std::string::npos) {
        EXPECT_EQ(it.value().get<double>(), many[i][key].get<double>())
            << key << " at record " << i;
      } else if (key == "loss" || key.find("_loss") != std::string::npos) {
        const double a = it.value().get<double>(), b = many[i][key].get<double>();
        EXPECT_NEAR(a, b, 1e-4 * std::abs(a)) << key << " at record " << i;
      }
    }
    ASSERT_TRUE(many[i].contains("router"));
    for (size_t l = 0; l < one[i]["router"].size(); ++l) {
      EXPECT_EQ(one[i]["router"][l]["share"], many[i]["router"][l]["share"]) << "layer " << l;
      EXPECT_EQ(one[i]["router"][l]["dropped"], many[i]["router"][l]["dropped"]);
    }
  }
  // The trained adapters.
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile a,
                           ReadSafetensors(dir.File("one/checkpoints/selected.safetensors")));
  MOA_ASSERT_OK_AND_ASSIGN(SafetensorsFile b,
                           ReadSafetensors(dir.File("many/checkpoints/selected.safetensors")));
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    EXPECT_TRUE(torch::allclose(t, b.tensors.at(name), 1e-4, 1e-6))
        << name << " max diff " << (t - b.tensors.at(name)).abs().max();
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, DataParallelTest, ::testing::Values(2, 4));

TEST(DataParallelSwadTest, TwoRanksEqualOneProcess) {
  test::TempDir dir;
  std::string out;
  const std::string args = " --swad.enabled=true --train.steps=40 --train.checkpoint_freq=4";
  ASSERT_EQ(test::RunShell(Moa() + TinyMoa(dir.File("one")) + args, &out), 0) << out;
  ASSERT_EQ(test::RunShell(Mpirun(2) + Moa() + TinyMoa(dir.File("two")) + args, &out), 0) << out;
  const nlohmann::json a = Records(dir.File("one/results.jsonl")).back();
  const nlohmann::json b = Records(dir.File("two/results.jsonl")).back();
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
  // Evaluations after steps 10, 15 and 19 depend only on the parameters: equal to 1e-5 relative
  // (losses) and exactly (accuracies).
  const auto whole = Records(dir.File("whole/results.jsonl"));
  const auto part = Records(dir.File("part/results.jsonl"));
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

struct Ended {
  int code;
  double seconds;
  std::string output;
};

Ended RunTimed(const std::string& command) {
  const auto start = std::chrono::steady_clock::now();
  Ended e;
  e.code = test::RunShell(command, &e.output);
  e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return e;
}

TEST(FailureTest, ThrowingRankEndsTheJobNamingIt) {
  const Ended e = RunTimed(Mpirun(3) + test::BinaryDir() + "/tests/failure_helper throw 1");
  EXPECT_NE(e.code, 0);
  EXPECT_LT(e.seconds, 30.0);
  EXPECT_NE(e.output.find("rank 1"), std::string::npos) << e.output;
  EXPECT_NE(e.output.find("injected failure"), std::string::npos) << e.output;
}

TEST(FailureTest, KilledRankEndsTheJobNamingIt) {
  const Ended e = RunTimed(Mpirun(3) + test::BinaryDir() + "/tests/failure_helper kill 2");
  EXPECT_NE(e.code, 0);
  EXPECT_NE(e.code, 124) << "timed out: the surviving ranks hung";
  EXPECT_LT(e.seconds, 30.0);
  EXPECT_NE(e.output.find("rank 2"), std::string::npos) << e.output;
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

}  // namespace
}  // namespace moa
