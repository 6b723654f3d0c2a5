// The training loss between log lines, the guard that keeps a non-finite loss from reaching the
// weights (docs/architecture.md, One training step, step 6), and the ranks' agreement to stop on
// a signal. Every rank's loss is summed over the world with a non-finite flag and a stop flag; the
// non-finite flag, left on the device, is the optimizer step's `skip` argument, so all ranks skip
// a bad update together without a host read. The sums are read on the host only where a value is
// needed (Read): then a non-finite step stops the run, named, and a stop asked of any rank is
// seen by every rank at the same step.
//
//   torch::Tensor skip = meter.Add(loss, world, step, signals.requested());
//   StepOptimizer(optimizer, fused, skip);
//   if (log_now) { MOA_RETURN_IF_ERROR(meter.Read()); Log() << meter.mean(); }
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <absl/status/statusor.h>
#include <torch/torch.h>

#include "parallel/communicator.h"

namespace moa::trainer {

class LossMeter {
 public:
  explicit LossMeter(const torch::Device& device);

  /// Sums this rank's `loss` (this rank's share of the global batch's mean) and `stop` over
  /// `world` and counts the step; a collective. Returns 1.0 (float32, shape {1}, on the device)
  /// when some rank's loss was not finite, else 0.0. A bad step adds nothing to the interval's
  /// sum.
  absl::StatusOr<torch::Tensor> Add(const torch::Tensor& loss, parallel::Communicator& world,
                                    int64_t step, bool stop = false);
  /// Reads the sums on the host: an error naming the first non-finite step, if any.
  absl::Status Read();
  /// Whether some rank asked to stop at or before the last step Read() saw.
  bool stop_requested() const { return stop_requested_; }
  /// The interval so far, as checkpoint metadata, and its restoration on resume (a run stopped
  /// between evaluations reports the same interval loss once resumed).
  void Export(std::map<std::string, std::string>* metadata) const;
  void Import(const std::map<std::string, std::string>& metadata);
  /// The mean global loss of the interval's steps, as of the last Read().
  double mean() const { return steps_ > 0 ? read_sum_ / static_cast<double>(steps_) : 0; }
  /// Starts a new interval.
  void Reset();

 private:
  torch::Tensor sum_;              // the interval's summed global loss
  torch::Tensor nonfinite_steps_;  // steps with a non-finite loss since the run started
  torch::Tensor first_nonfinite_;  // the first such step, -1 before one
  torch::Tensor stop_votes_;       // ranks that asked to stop, summed over steps
  bool stop_requested_ = false;
  int64_t steps_ = 0;
  double read_sum_ = 0;
};

}  // namespace moa::trainer
