#include "moa/expert_placement.h"

#include <algorithm>
#include <numeric>
#include <string>

namespace moa {
namespace {

struct Search {
  std::vector<int64_t> costs;  // sorted descending
  std::vector<int> best, current;
  std::vector<int64_t> load;
  std::vector<int> count;
  int64_t best_max = INT64_MAX;
  int ranks = 0;

  void Run(size_t i, int64_t current_max) {
    if (current_max >= best_max) return;
    const int empty = static_cast<int>(std::count(count.begin(), count.end(), 0));
    if (static_cast<int>(costs.size() - i) < empty) return;  // every rank needs an expert
    if (i == costs.size()) {
      best_max = current_max;
      best = current;
      return;
    }
    for (int r = 0; r < ranks; ++r) {
      // Ranks with the same load are interchangeable: try only the first of them.
      bool seen = false;
      for (int q = 0; q < r; ++q) seen |= load[q] == load[r] && count[q] == count[r];
      if (seen) continue;
      load[r] += costs[i];
      ++count[r];
      current[i] = r;
      Run(i + 1, std::max(current_max, load[r]));
      load[r] -= costs[i];
      --count[r];
    }
  }
};

}  // namespace

absl::StatusOr<std::vector<int>> PartitionExperts(const std::vector<int64_t>& costs, int ranks) {
  const int n = static_cast<int>(costs.size());
  if (ranks < 1 || ranks > n) {
    return absl::InvalidArgumentError("parallel.ep = " + std::to_string(ranks) + " exceeds the " +
                                      std::to_string(n) + " experts of an MoA layer");
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return costs[a] > costs[b]; });
  std::vector<int> owner(n, 0);
  if (n <= 16) {
    Search s;
    for (int e : order) s.costs.push_back(costs[e]);
    s.ranks = ranks;
    s.current.assign(n, 0);
    s.load.assign(ranks, 0);
    s.count.assign(ranks, 0);
    s.Run(0, 0);
    for (int i = 0; i < n; ++i) owner[order[i]] = s.best[i];
    return owner;
  }
  // Longest processing time first, onto the least-loaded rank; empty ranks first.
  std::vector<int64_t> load(ranks, 0);
  std::vector<int> count(ranks, 0);
  for (int e : order) {
    int target = 0;
    for (int r = 1; r < ranks; ++r) {
      if ((count[r] == 0) != (count[target] == 0) ? count[r] == 0 : load[r] < load[target])
        target = r;
    }
    owner[e] = target;
    load[target] += costs[e];
    ++count[target];
  }
  return owner;
}

}  // namespace moa
