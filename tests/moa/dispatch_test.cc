// The expert-parallel dispatch plan without a communicator: send order, count tables and the
// received rows of each local expert, checked by hand on small cases and by simulating the whole
// exchange over several ranks in one process (every token reaches its expert's holder exactly
// once and comes back to where it started), including empty ranks, every token to one expert,
// and routings where capacity dropped tokens.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "moa/dispatch.h"

namespace moa {
namespace {

TEST(DispatchPlanTest, SendOrderGroupsExpertsByHolder) {
  // Experts 0..4 on ranks 1, 0, 1, 0, 2; this rank routes 3, 0, 2, 5, 1 tokens to them.
  const SendPlan plan = PlanSend({3, 0, 2, 5, 1}, {1, 0, 1, 0, 2}, 3);
  EXPECT_EQ(plan.expert_order, (std::vector<int64_t>{1, 3, 0, 2, 4}));
  EXPECT_EQ(plan.counts, (std::vector<int64_t>{0, 5, 3, 2, 1}));
  EXPECT_EQ(plan.send_rows, (std::vector<int64_t>{5, 5, 1}));
  EXPECT_EQ(plan.count_rows, (std::vector<int64_t>{2, 2, 1}));
  EXPECT_EQ(LocalExperts({1, 0, 1, 0, 2}, 0), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(LocalExperts({1, 0, 1, 0, 2}, 3), (std::vector<int64_t>{}));
}

TEST(DispatchPlanTest, ReceivedRowsAreGroupedBySourceThenExpert) {
  // Two local experts; sources send (2, 1), (0, 0), (1, 3).
  const ReceivePlan plan = PlanReceive({{2, 1}, {0, 0}, {1, 3}});
  EXPECT_EQ(plan.recv_rows, (std::vector<int64_t>{3, 0, 4}));
  EXPECT_EQ(plan.total_rows, 7);
  EXPECT_EQ(plan.rows_of[0], (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(plan.rows_of[1], (std::vector<int64_t>{2, 4, 5, 6}));
}

TEST(DispatchPlanTest, RankHoldingNoExpertReceivesNothing) {
  const ReceivePlan plan = PlanReceive({{}, {}, {}});
  EXPECT_EQ(plan.recv_rows, (std::vector<int64_t>{0, 0, 0}));
  EXPECT_TRUE(plan.rows_of.empty());
  EXPECT_EQ(plan.total_rows, 0);
}

TEST(DispatchPlanTest, BadPlacementIsAnError) {
  EXPECT_THROW(PlanSend({1, 2}, {0, 2}, 2), std::invalid_argument);
  EXPECT_THROW(PlanSend({1, 2, 3}, {0, 1}, 2), std::invalid_argument);
  EXPECT_THROW(PlanReceive({{1, 2}, {3}}), std::invalid_argument);
}

// One token: its origin rank and its position in that rank's routing.
struct Token {
  int rank;
  int64_t index;
  bool operator<(const Token& o) const { return rank != o.rank ? rank < o.rank : index < o.index; }
};

// Simulates both all_to_all_v exchanges of a layer over `ranks` ranks for `choice[r][t]`, the
// expert of rank r's token t (-1: dropped by capacity), and checks where every token goes.
void SimulateExchange(const std::vector<std::vector<int>>& choice, const std::vector<int>& owner) {
  const int ranks = static_cast<int>(choice.size());
  const int experts = static_cast<int>(owner.size());
  // Each rank's plan and the tokens it sends to each destination, in send order.
  std::vector<SendPlan> plans;
  std::vector<std::vector<std::vector<Token>>> outbox(ranks,
                                                      std::vector<std::vector<Token>>(ranks));
  std::vector<std::vector<std::vector<int64_t>>> counts_to(
      ranks, std::vector<std::vector<int64_t>>(ranks));
  for (int r = 0; r < ranks; ++r) {
    std::vector<int64_t> per_expert(experts, 0);
    std::vector<std::vector<int64_t>> tokens_of(experts);
    for (size_t t = 0; t < choice[r].size(); ++t) {
      if (choice[r][t] < 0) continue;
      ++per_expert[choice[r][t]];
      tokens_of[choice[r][t]].push_back(static_cast<int64_t>(t));
    }
    plans.push_back(PlanSend(per_expert, owner, ranks));
    const SendPlan& plan = plans.back();
    size_t entry = 0;
    for (int dest = 0; dest < ranks; ++dest) {
      int64_t sent = 0;
      for (int64_t k = 0; k < plan.count_rows[dest]; ++k, ++entry) {
        const int64_t e = plan.expert_order[entry];
        ASSERT_EQ(owner[e], dest);
        counts_to[r][dest].push_back(plan.counts[entry]);
        for (int64_t t : tokens_of[e]) outbox[r][dest].push_back({r, t});
        sent += plan.counts[entry];
      }
      ASSERT_EQ(sent, plan.send_rows[dest]);
    }
  }
  std::map<Token, int> computed_by;  // token -> the rank whose expert computed it
  for (int me = 0; me < ranks; ++me) {
    const std::vector<int64_t> local = LocalExperts(owner, me);
    std::vector<std::vector<int64_t>> table(ranks);
    std::vector<Token> arrived;
    for (int s = 0; s < ranks; ++s) {
      table[s] = counts_to[s][me];
      arrived.insert(arrived.end(), outbox[s][me].begin(), outbox[s][me].end());
    }
    const ReceivePlan plan = PlanReceive(table);
    ASSERT_EQ(plan.total_rows, static_cast<int64_t>(arrived.size()));
    for (int s = 0; s < ranks; ++s) {
      EXPECT_EQ(plan.recv_rows[s], static_cast<int64_t>(outbox[s][me].size()));
    }
    for (size_t m = 0; m < local.size(); ++m) {
      for (int64_t row : plan.rows_of[m]) {
        const Token token = arrived.at(row);
        EXPECT_EQ(choice[token.rank][token.index], local[m]) << "a row reached the wrong expert";
        EXPECT_TRUE(computed_by.emplace(token, me).second) << "a token was computed twice";
      }
    }
  }
  int64_t kept = 0;
  for (const auto& tokens : choice) {
    for (int e : tokens) kept += e >= 0 ? 1 : 0;
  }
  EXPECT_EQ(static_cast<int64_t>(computed_by.size()), kept) << "a kept token was never computed";
  // The inverse exchange sends each holder's rows back in arrival order, so source s receives
  // them in the order it sent them: the plan's send order.
  for (int r = 0; r < ranks; ++r) {
    for (int dest = 0; dest < ranks; ++dest) {
      for (const Token& token : outbox[r][dest]) EXPECT_EQ(computed_by.at(token), dest);
    }
  }
}

TEST(DispatchPlanTest, SimulatedExchangeDeliversEveryTokenOnce) {
  std::mt19937 random(7);
  for (int ranks : {1, 2, 3, 4}) {
    for (int experts : {ranks, ranks + 2, 8}) {
      if (experts < ranks) continue;
      std::vector<int> owner(experts);
      for (int e = 0; e < experts; ++e) owner[e] = e % ranks;
      std::vector<std::vector<int>> choice(ranks);
      for (int r = 0; r < ranks; ++r) {
        const int tokens = static_cast<int>(random() % 40);
        for (int t = 0; t < tokens; ++t) {
          // One in five dropped by capacity.
          choice[r].push_back(random() % 5 == 0 ? -1 : static_cast<int>(random() % experts));
        }
      }
      SimulateExchange(choice, owner);
    }
  }
}

TEST(DispatchPlanTest, EveryTokenToOneExpertAndEmptyRanks) {
  // Four ranks, four experts; every token on every rank picks expert 2 (held by rank 2), and
  // rank 1 has no token at all.
  SimulateExchange({{2, 2, 2}, {}, {2}, {2, 2}}, {0, 1, 2, 3});
  // Everything dropped by capacity.
  SimulateExchange({{-1, -1}, {-1}}, {0, 1});
}

}  // namespace
}  // namespace moa
