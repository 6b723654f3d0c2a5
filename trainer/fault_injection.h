// Fault injection for testing failure handling with the real program (README, When things go
// wrong): MOA_INJECT_FAULT=RANK:STEP:KIND makes rank RANK fail during step STEP, after its
// forward, by an exception (`throw`), by SIGKILL (`kill`) or with a non-finite loss (`nan`), or
// makes it send itself SIGUSR1 (`stop`: a preemption notice landing at a known step).
// Read once per run from the environment, so a resumed run started without it runs clean.
//
//   MOA_INJECT_FAULT=2:12:kill mpirun -np 4 moa train ...
#pragma once

#include <cstdint>
#include <string>

#include <absl/status/statusor.h>
#include <torch/torch.h>

namespace moa::trainer {

struct InjectedFault {
  enum class Kind { kNone, kThrow, kKill, kNan, kStop };
  Kind kind = Kind::kNone;
  int64_t rank = -1;
  int64_t step = -1;

  /// MOA_INJECT_FAULT's value (none when unset or empty); a malformed value is an error that
  /// shows the expected form.
  static absl::StatusOr<InjectedFault> FromEnvironment();
  /// At (rank, step): throws, ends the process with SIGKILL, makes `loss` NaN, or raises SIGUSR1.
  void Apply(int64_t this_rank, int64_t this_step, torch::Tensor* loss) const;
};

}  // namespace moa::trainer
