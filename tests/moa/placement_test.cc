// Expert placement balanced by cost.
#include "moa/expert_placement.h"
#include "tests/support/test_support.h"

namespace moa {
namespace {

int64_t MaxLoad(const std::vector<int64_t>& costs, const std::vector<int>& owner, int ranks) {
  std::vector<int64_t> load(ranks, 0);
  for (size_t e = 0; e < costs.size(); ++e) load[owner[e]] += costs[e];
  return *std::max_element(load.begin(), load.end());
}

TEST(PlacementTest, PaperExpertsOverTwoThreeAndFourRanks) {
  const std::vector<int64_t> ranks_1248 = {1, 2, 4, 8};
  MOA_ASSERT_OK_AND_ASSIGN(auto two, PartitionExperts(ranks_1248, 2));
  EXPECT_EQ(MaxLoad(ranks_1248, two, 2), 8);  // {8} and {1, 2, 4}
  EXPECT_NE(two[3], two[0]);
  MOA_ASSERT_OK_AND_ASSIGN(auto three, PartitionExperts(ranks_1248, 3));
  EXPECT_EQ(MaxLoad(ranks_1248, three, 3), 8);
  MOA_ASSERT_OK_AND_ASSIGN(auto four, PartitionExperts(ranks_1248, 4));
  std::vector<int> sorted = four;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<int>{0, 1, 2, 3}));
}

TEST(PlacementTest, ExactWhereGreedyIsNot) {
  // Longest-processing-time-first gives {5, 4} and {5, 3, 3} = 11; the optimum is 10.
  const std::vector<int64_t> costs = {5, 5, 4, 3, 3};
  MOA_ASSERT_OK_AND_ASSIGN(auto owner, PartitionExperts(costs, 2));
  EXPECT_EQ(MaxLoad(costs, owner, 2), 10);
}

TEST(PlacementTest, EveryRankGetsAnExpertAndTooManyRanksIsAnError) {
  const std::vector<int64_t> costs = {100, 1, 1};
  MOA_ASSERT_OK_AND_ASSIGN(auto owner, PartitionExperts(costs, 3));
  std::vector<int> sorted = owner;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<int>{0, 1, 2}));
  auto bad = PartitionExperts(costs, 4);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("parallel.ep"), std::string::npos);
}

}  // namespace
}  // namespace moa
