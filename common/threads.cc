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

void ApplyThreadCount(int threads) { torch::set_num_threads(threads); }

}  // namespace moa
