// Model selection on hand-written results records, ties included, and the table it prints.
#include "trainer/selection.h"
#include "tests/support/test_support.h"

namespace moa::trainer {
namespace {

// Three environments: 0 and 1 train, 2 is the test env.
nlohmann::json Record(int step, double out0, double out1, double test_in, double test_out) {
  return {{"step", step},
          {"env0_out_acc", out0},
          {"env1_out_acc", out1},
          {"env2_in_acc", test_in},
          {"env2_out_acc", test_out}};
}

TEST(SelectionTest, ThreeMethodsPickTheRightRecords) {
  const std::vector<nlohmann::json> records = {
      Record(0, 0.50, 0.50, 0.30, 0.31),
      Record(10, 0.70, 0.90, 0.40, 0.60),  // validation 0.80: best, first of a tie
      Record(20, 0.90, 0.70, 0.45, 0.55),  // validation 0.80 again: the tie goes to step 10
      Record(30, 0.60, 0.60, 0.50, 0.60),  // oracle 0.60 ties step 10: earliest wins
      Record(40, 0.55, 0.60, 0.35, 0.20),  // last
  };
  MOA_ASSERT_OK_AND_ASSIGN(auto selections, SelectModels(records, {0, 1}, {2}));
  ASSERT_EQ(selections.size(), 3u);
  EXPECT_EQ(selections[0].method, "training-domain validation");
  EXPECT_EQ(selections[0].step, 10);
  EXPECT_DOUBLE_EQ(selections[0].validation, 0.80);
  EXPECT_DOUBLE_EQ(selections[0].test_in[0], 0.40);
  EXPECT_EQ(selections[1].method, "test-domain oracle");
  EXPECT_EQ(selections[1].step, 10);
  EXPECT_DOUBLE_EQ(selections[1].test_in[0], 0.40);
  EXPECT_EQ(selections[2].method, "last");
  EXPECT_EQ(selections[2].step, 40);
  EXPECT_DOUBLE_EQ(selections[2].test_in[0], 0.35);
}

TEST(SelectionTest, TwoTestEnvsAverage) {
  const std::vector<nlohmann::json> records = {
      {{"step", 0},
       {"env0_out_acc", 0.5},
       {"env1_in_acc", 0.2},
       {"env1_out_acc", 0.1},
       {"env2_in_acc", 0.6},
       {"env2_out_acc", 0.4}},
      {{"step", 5},
       {"env0_out_acc", 0.4},
       {"env1_in_acc", 0.3},
       {"env1_out_acc", 0.4},
       {"env2_in_acc", 0.7},
       {"env2_out_acc", 0.3}},
  };
  MOA_ASSERT_OK_AND_ASSIGN(auto s, SelectModels(records, {0}, {1, 2}));
  EXPECT_EQ(s[0].step, 0);
  EXPECT_DOUBLE_EQ(s[0].average, 0.4);
  EXPECT_EQ(s[1].step, 5);  // mean out 0.35 > 0.25
  EXPECT_DOUBLE_EQ(s[1].average, 0.5);
}

TEST(SelectionTest, MissingKeysAndNoRecordsAreErrors) {
  EXPECT_FALSE(SelectModels({}, {0}, {1}).ok());
  auto result = SelectModels({{{"step", 7}, {"env0_out_acc", 0.5}}}, {0}, {1});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("lacks numeric key env1_"), std::string::npos)
      << result.status();
  EXPECT_NE(result.status().message().find("7"), std::string::npos);
}

TEST(SelectionTest, TableText) {
  Selection s;
  s.method = "last";
  s.step = 40;
  s.test_in = {0.35};
  s.average = 0.35;
  const std::string expected =
      "selection                          test       Avg.   step\n"
      "last                             35.000     35.000     40\n";
  EXPECT_EQ(FormatSelectionTable({s}, {"test"}), expected);
}

}  // namespace
}  // namespace moa::trainer
