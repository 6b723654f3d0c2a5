// Thread-count policy for LibTorch (which defaults to 1 thread here): an explicit count, or the
// cores of this node divided among the ranks that share it; the image decoding threads; and how
// OpenMP's idle threads wait.
#pragma once

#include <string>

namespace moa {

/// Returns `requested` when > 0, else max(1, hardware cores / ranks_per_node).
int ResolveThreadCount(int requested, int ranks_per_node);

/// Returns `requested` when > 0, else the decoding threads a rank gets by default: where the
/// model runs on a GPU, the rank's share of the cores but one (the host only feeds the device);
/// on the CPU, the cores the compute threads leave, and at least one. In-memory datasets decode
/// nothing (one thread assembles their batches, whatever this says).
int ResolveDataWorkers(int requested, int compute_threads, int ranks_per_node, bool gpu);

/// OpenMP (libgomp, under LibTorch and MKL) reads how its idle threads wait when it loads, before
/// main. Unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set, this re-executes the program (same pid,
/// arguments and environment) once with GOMP_SPINCOUNT=1000, libgomp's own value for a team with
/// more threads than free cores: idle threads sleep after a short spin instead of ~300000 spins,
/// so a core that another process (or a rank's decoding thread) takes does not stall every
/// parallel region. Returns where nothing needed restarting or the restart failed.
void RestartWithShortOpenMpSpin(char** argv);

/// How this process's OpenMP threads wait when idle: "GOMP_SPINCOUNT=N", "OMP_WAIT_POLICY=P"
/// (both when both are set) or "libgomp default".
std::string OpenMpWaitSetting();

/// Sets LibTorch's intra-op thread count (and OpenMP's and OpenBLAS's through it) to `threads`.
void ApplyThreadCount(int threads);

}  // namespace moa
