// SWAD: the loss-valley rule on hand-written loss sequences, and the averaged parameters against
// the mean of the per-step parameters.
#include "trainer/swad.h"
#include "tests/support/test_support.h"

namespace moa::trainer {
namespace {

std::vector<int64_t> Feed(LossValley& valley, const std::vector<double>& losses, bool* dead) {
  std::vector<int64_t> included;
  *dead = false;
  for (double l : losses) {
    const LossValley::Decision d = valley.Add(l);
    included.insert(included.end(), d.include.begin(), d.include.end());
    *dead |= d.dead;
  }
  return included;
}

TEST(LossValleyTest, ConvergesReachesBackAndDrainsAtTheEnd) {
  LossValley valley(3, 6, 0.3);
  bool dead;
  // Converged at segment 2 (6 is the least of 6, 6.5, 7); threshold 1.3 x 6.5 = 8.45; the look-
  // back takes segment 1 (8 <= 8.45) but not 0 (10).
  const auto included = Feed(valley, {10, 8, 6, 6.5, 7, 6.2, 6.4, 6.3}, &dead);
  EXPECT_FALSE(dead);
  EXPECT_TRUE(valley.converged());
  EXPECT_DOUBLE_EQ(valley.threshold(), 8.45);
  EXPECT_EQ(included, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(valley.Finish(), (std::vector<int64_t>{3, 4, 5, 6, 7}));
}

TEST(LossValleyTest, DeadValleyStopsAfterNToleranceEvaluationsAboveThreshold) {
  LossValley valley(3, 6, 0.3);
  bool dead;
  const auto included = Feed(valley, {10, 8, 6, 6.5, 7, 9, 9, 9, 9, 9, 9}, &dead);
  // Segment 3 is decided at the 9th loss (its six include 6.5), 4 at the 10th (7), and at the
  // 11th the six losses from segment 5 are all above 8.45: the valley is dead.
  EXPECT_TRUE(dead);
  EXPECT_EQ(included, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_TRUE(valley.Finish().empty());
}

TEST(LossValleyTest, ToleranceExceededAtTheEndDrainsOnlyUnderThreshold) {
  LossValley valley(3, 6, 0.3);
  bool dead;
  const auto included = Feed(valley, {10, 8, 6, 6.5, 7, 9, 9}, &dead);
  EXPECT_FALSE(dead);
  EXPECT_EQ(included, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(valley.Finish(), (std::vector<int64_t>{3, 4}));  // 5 and 6 never go back under 8.45
}

TEST(LossValleyTest, NeverConvergesUsesTheLastSegment) {
  LossValley valley(3, 6, 0.3);
  bool dead;
  EXPECT_TRUE(Feed(valley, {9, 8, 7, 6, 5}, &dead).empty());
  EXPECT_FALSE(valley.converged());
  EXPECT_EQ(valley.Finish(), (std::vector<int64_t>{4}));
}

TEST(LossValleyTest, ReferenceRuleReproducesItsQuirks) {
  LossValley valley(3, 6, 0.3, SwadRule::kReference);
  bool dead;
  // At convergence (segment 2, threshold 8.45) the reference starts from a copy of segment 2,
  // then adds Q[j+1:] of Q = the first 4 of its long window (segments 0..3): the newest entry
  // above the threshold is segment 0, so j = 1 and segments 2 and 3 are added -- segment 2 twice,
  // the eligible segment 1 skipped, segment 3 early. At the 8th loss its long window starts at
  // segment 2 again, which is added a third time; the finish drops that entry and adds 3..7.
  const auto included = Feed(valley, {10, 8, 6, 6.5, 7, 6.2, 6.4, 6.3}, &dead);
  EXPECT_FALSE(dead);
  EXPECT_EQ(included, (std::vector<int64_t>{2, 2, 3, 2}));
  EXPECT_EQ(valley.Finish(), (std::vector<int64_t>{3, 4, 5, 6, 7}));
}

TEST(SwadTest, ReferenceRuleWeightsSegmentsEqually) {
  torch::Tensor p = torch::zeros({1});
  Swad swad({{"w", p}}, 1, 1, 0.0, SwadRule::kReference);
  // Segment 0: one step at 0; segment 1: three steps at 4. With n_converge = n_tolerance = 1 the
  // first segment converges at once; the second is under the threshold only if its loss is.
  p.fill_(0.0);
  swad.Step();
  swad.CloseSegment(1.0);
  for (int i = 0; i < 3; ++i) {
    p.fill_(4.0);
    swad.Step();
  }
  swad.CloseSegment(1.0);
  // Segment 0 at convergence (Q = [segment 0] adds nothing more), segment 1 at the next
  // evaluation: the mean of the segment averages, (0 + 4) / 2 -- steps weighted equally would
  // give (0 + 3 x 4) / 4 = 3.
  EXPECT_NEAR(swad.Finish().at("w").item<float>(), 2.0f, 1e-6);
}

TEST(SwadTest, AverageIsTheMeanOfTheIncludedSteps) {
  torch::manual_seed(0);
  torch::Tensor p = torch::zeros({3, 2});
  Swad swad({{"w", p}}, 3, 6, 0.3);
  // Segments: step 0 alone, then 4 steps each; losses of the third test above.
  const std::vector<double> losses = {10, 8, 6, 6.5, 7, 9, 9};
  std::vector<torch::Tensor> values;
  std::vector<int64_t> segment_of;
  int64_t step = 0;
  for (size_t s = 0; s < losses.size(); ++s) {
    const int steps = s == 0 ? 1 : 4;
    for (int i = 0; i < steps; ++i, ++step) {
      p.copy_(torch::randn({3, 2}));
      values.push_back(p.clone());
      segment_of.push_back(static_cast<int64_t>(s));
      swad.Step();
    }
    EXPECT_FALSE(swad.CloseSegment(losses[s]));
  }
  const auto averaged = swad.Finish();
  // Included segments 1..4: steps 1 to 16.
  torch::Tensor expected = torch::zeros({3, 2}, torch::kFloat64);
  int64_t count = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    if (segment_of[i] >= 1 && segment_of[i] <= 4) {
      expected += values[i].to(torch::kFloat64);
      ++count;
    }
  }
  EXPECT_EQ(count, 16);
  EXPECT_EQ(swad.averaged_steps(), 16);
  EXPECT_EQ(swad.start_step(), 1);
  EXPECT_EQ(swad.end_step(), 16);
  EXPECT_TRUE(
      torch::allclose(averaged.at("w"), (expected / count).to(torch::kFloat32), 1e-6, 1e-7));
}

TEST(SwadTest, ExportImportContinuesIdentically) {
  torch::manual_seed(1);
  torch::Tensor p = torch::zeros({4});
  Swad a({{"w", p}}, 2, 3, 0.2), b({{"w", p}}, 2, 3, 0.2);
  const std::vector<double> losses = {5, 4, 4.5, 4.2, 4.1, 4.4, 6, 6, 6};
  std::vector<torch::Tensor> draws;
  for (size_t i = 0; i < losses.size() * 3; ++i) draws.push_back(torch::randn({4}));
  size_t d = 0;
  for (size_t s = 0; s < losses.size(); ++s) {
    for (int i = 0; i < 3; ++i) {
      p.copy_(draws[d++]);
      a.Step();
    }
    a.CloseSegment(losses[s]);
    if (s == 3) {  // b restarts from a's checkpoint here
      std::vector<std::pair<std::string, torch::Tensor>> tensors;
      std::map<std::string, std::string> meta;
      a.Export(&tensors, &meta);
      b.Import(tensors, meta);
    } else if (s > 3) {
      // b replays the same steps after the restart.
      for (int i = 0; i < 3; ++i) {
        p.copy_(draws[d - 3 + i]);
        b.Step();
      }
      b.CloseSegment(losses[s]);
    }
  }
  EXPECT_TRUE(torch::equal(a.Finish().at("w"), b.Finish().at("w")));
  EXPECT_EQ(a.averaged_steps(), b.averaged_steps());
}

}  // namespace
}  // namespace moa::trainer
