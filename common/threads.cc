#include "common/threads.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
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

void RestartWithShortOpenMpSpin(char** argv) {
  if (std::getenv("GOMP_SPINCOUNT") != nullptr || std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("GOMP_SPINCOUNT", "1000", /*overwrite=*/1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("GOMP_SPINCOUNT");  // the restart failed: carry on as started
}

std::string OpenMpWaitSetting() {
  std::string setting;
  for (const char* name : {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"}) {
    const char* value = std::getenv(name);
    if (value == nullptr) continue;
    if (!setting.empty()) setting += ", ";
    setting += std::string(name) + "=" + value;
  }
  return setting.empty() ? "libgomp default" : setting;
}

void ApplyThreadCount(int threads) { torch::set_num_threads(threads); }

}  // namespace moa
