#include "moa/dispatch.h"

#include <stdexcept>
#include <string>

namespace moa {

SendPlan PlanSend(const std::vector<int64_t>& tokens_per_expert, const std::vector<int>& owner,
                  int ranks) {
  if (tokens_per_expert.size() != owner.size()) {
    throw std::invalid_argument("dispatch plan: " + std::to_string(tokens_per_expert.size()) +
                                " token counts for " + std::to_string(owner.size()) + " experts");
  }
  SendPlan plan;
  plan.send_rows.assign(ranks, 0);
  plan.count_rows.assign(ranks, 0);
  for (int r = 0; r < ranks; ++r) {
    for (size_t e = 0; e < owner.size(); ++e) {
      if (owner[e] < 0 || owner[e] >= ranks) {
        throw std::invalid_argument("dispatch plan: expert " + std::to_string(e) +
                                    " is placed on rank " + std::to_string(owner[e]) + " of " +
                                    std::to_string(ranks));
      }
      if (owner[e] != r) continue;
      plan.expert_order.push_back(static_cast<int64_t>(e));
      plan.counts.push_back(tokens_per_expert[e]);
      plan.send_rows[r] += tokens_per_expert[e];
      ++plan.count_rows[r];
    }
  }
  return plan;
}

std::vector<int64_t> LocalExperts(const std::vector<int>& owner, int rank) {
  std::vector<int64_t> local;
  for (size_t e = 0; e < owner.size(); ++e) {
    if (owner[e] == rank) local.push_back(static_cast<int64_t>(e));
  }
  return local;
}

ReceivePlan PlanReceive(const std::vector<std::vector<int64_t>>& table) {
  ReceivePlan plan;
  const size_t local = table.empty() ? 0 : table.front().size();
  plan.recv_rows.assign(table.size(), 0);
  plan.rows_of.assign(local, {});
  for (size_t s = 0; s < table.size(); ++s) {
    if (table[s].size() != local) {
      throw std::invalid_argument("dispatch plan: source " + std::to_string(s) + " sent " +
                                  std::to_string(table[s].size()) + " counts for " +
                                  std::to_string(local) + " local experts");
    }
    for (size_t m = 0; m < local; ++m) {
      for (int64_t i = 0; i < table[s][m]; ++i) plan.rows_of[m].push_back(plan.total_rows++);
      plan.recv_rows[s] += table[s][m];
    }
  }
  return plan;
}

}  // namespace moa
