#include "common/threads.h"

#include <algorithm>
#include <thread>

#include <torch/torch.h>

namespace moa {

int ResolveThreadCount(int requested, int ranks_per_node) {
  if (requested > 0) return requested;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, ranks_per_node));
}

int ResolveDataWorkers(int requested, int compute_threads, int ranks_per_node, bool gpu) {
  if (requested > 0) return requested;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int per_rank = std::max(1, cores / std::max(1, ranks_per_node));
  return std::max(1, gpu ? per_rank - 1 : per_rank - compute_threads);
}

void ApplyThreadCount(int threads) { torch::set_num_threads(threads); }

}  // namespace moa
