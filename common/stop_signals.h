// Preemption: SIGUSR1 (which mpirun forwards to every rank, and Slurm's --signal sends before a
// time limit) and SIGTERM (srun and scancel deliver it to the tasks) ask a run to stop at the end
// of its current step and save its state. A second signal, or `grace_seconds` without the run
// having stopped, ends the process at once.
//
//   StopSignals stop(/*grace_seconds=*/120);
//   for (...) { TrainStep(); if (stop.requested()) { SaveState(); return kPreemptedExitCode; } }
#pragma once

namespace moa {

/// The exit code of a run that stopped on a signal after saving its state (EX_TEMPFAIL: try
/// again; `moa train --resume` continues it).
inline constexpr int kPreemptedExitCode = 75;

class StopSignals {
 public:
  /// Installs the handlers; the previous ones come back when this object goes.
  explicit StopSignals(int grace_seconds);
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  /// True once a stop signal arrived.
  bool requested() const;
};

}  // namespace moa
