// The expert-parallel dispatch plan of one MoA layer, as pure functions of the routing (how many
// tokens each expert got on this rank), the placement (which rank of the expert-parallel group
// holds each expert) and the ranks: what this rank sends where and in which order, and, once the
// counts of every rank have arrived, which received rows belong to which of its own experts. No
// communication and no tensors, so it is unit-tested without a communicator; the sharded MoA
// layer (moa_layer.cc) carries it out with all_to_all_v.
//
//   SendPlan send = PlanSend(tokens_per_expert, owner, ranks);
//   // exchange send.counts (send.count_rows per rank), then the tokens (send.send_rows per rank)
//   ReceivePlan recv = PlanReceive(table);  // table[source][m]: rows for my m-th expert
#pragma once

#include <cstdint>
#include <vector>

namespace moa {

struct SendPlan {
  /// Every expert once, grouped by holder rank (ascending), ascending within a rank: the order in
  /// which this rank's tokens travel (each expert's tokens in routing order).
  std::vector<int64_t> expert_order;
  /// Per destination rank: how many token rows go there.
  std::vector<int64_t> send_rows;
  /// Per destination rank: how many count entries go there (the experts it holds).
  std::vector<int64_t> count_rows;
  /// Per entry of expert_order: that expert's token count on this rank (sent to its holder).
  std::vector<int64_t> counts;
};

/// `tokens_per_expert[e]`: tokens this rank routes to expert e (after capacity);
/// `owner[e]`: the rank holding expert e, in [0, ranks).
SendPlan PlanSend(const std::vector<int64_t>& tokens_per_expert, const std::vector<int>& owner,
                  int ranks);

/// The experts `rank` holds, ascending.
std::vector<int64_t> LocalExperts(const std::vector<int>& owner, int rank);

struct ReceivePlan {
  /// Per source rank: rows received from it.
  std::vector<int64_t> recv_rows;
  /// Per local expert (LocalExperts order): the received rows it computes, in arrival order.
  std::vector<std::vector<int64_t>> rows_of;
  /// All rows received.
  int64_t total_rows = 0;
};

/// `table[s][m]`: rows source rank s sends for this rank's m-th local expert (the counts that
/// arrived). Rows from a source come grouped by local expert, sources in rank order.
ReceivePlan PlanReceive(const std::vector<std::vector<int64_t>>& table);

}  // namespace moa
