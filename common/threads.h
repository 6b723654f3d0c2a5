// Thread-count policy for LibTorch (which defaults to 1 thread here): an explicit count, or the
// cores of this node divided among the ranks that share it; and the image decoding threads.
#pragma once

namespace moa {

/// Returns `requested` when > 0, else max(1, hardware cores / ranks_per_node).
int ResolveThreadCount(int requested, int ranks_per_node);

/// Returns `requested` when > 0, else the decoding threads a rank gets by default: where the
/// model runs on a GPU, the rank's share of the cores but one (the host only feeds the device);
/// on the CPU, the cores the compute threads leave, and at least one. In-memory datasets decode
/// nothing (one thread assembles their batches, whatever this says).
int ResolveDataWorkers(int requested, int compute_threads, int ranks_per_node, bool gpu);

/// Sets LibTorch's intra-op thread count (and OpenMP's and OpenBLAS's through it) to `threads`.
void ApplyThreadCount(int threads);

}  // namespace moa
