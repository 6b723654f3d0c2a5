// Thread-count policy for LibTorch (which defaults to 1 thread here): an explicit count, or the
// cores of this node divided among the ranks that share it.
#pragma once

namespace moa {

/// Returns `requested` when > 0, else max(1, hardware cores / ranks_per_node).
int ResolveThreadCount(int requested, int ranks_per_node);

/// Sets LibTorch's intra-op thread count (and OpenMP's and OpenBLAS's through it) to `threads`.
void ApplyThreadCount(int threads);

}  // namespace moa
