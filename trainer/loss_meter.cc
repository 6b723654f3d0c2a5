#include "trainer/loss_meter.h"

#include <cstdio>
#include <string>

#include "common/status_macros.h"

namespace moa::trainer {

LossMeter::LossMeter(const torch::Device& device) {
  const auto on_device = torch::TensorOptions(torch::kFloat64).device(device);
  sum_ = torch::zeros({}, on_device);
  nonfinite_steps_ = torch::zeros({}, on_device);
  first_nonfinite_ = torch::full({}, -1.0, on_device);
  stop_votes_ = torch::zeros({}, on_device);
}

absl::StatusOr<torch::Tensor> LossMeter::Add(const torch::Tensor& loss,
                                             parallel::Communicator& world, int64_t step,
                                             bool stop) {
  // The global batch's loss and whether any rank's was not finite: every rank sees the same
  // values, so all skip the update together, and all stop together when it is read.
  torch::Tensor local = loss.detach().to(torch::kFloat64).reshape({1});
  torch::Tensor global = torch::cat({local, (~torch::isfinite(local)).to(torch::kFloat64),
                                     torch::full({1}, stop ? 1.0 : 0.0, local.options())});
  MOA_RETURN_IF_ERROR(world.AllReduce(global, parallel::ReduceOp::kSum));
  const torch::Tensor bad = global[1] > 0;
  sum_.add_(torch::where(bad, 0.0, global[0] / world.size()));
  first_nonfinite_.copy_(
      torch::where(bad & (first_nonfinite_ < 0), static_cast<double>(step), first_nonfinite_));
  nonfinite_steps_.add_(bad.to(torch::kFloat64));
  stop_votes_.add_(global[2]);
  ++steps_;
  return bad.to(torch::kFloat32).reshape({1});
}

absl::Status LossMeter::Read() {
  if (nonfinite_steps_.item<double>() > 0) {
    return absl::InternalError(
        "training loss is not finite at step " +
        std::to_string(static_cast<int64_t>(first_nonfinite_.item<double>())) +
        " (that update was skipped); lower optim.lr or check the data");
  }
  read_sum_ = sum_.item<double>();
  stop_requested_ = stop_votes_.item<double>() > 0;
  return absl::OkStatus();
}

void LossMeter::Reset() {
  sum_.zero_();
  steps_ = 0;
  read_sum_ = 0;
}

void LossMeter::Export(std::map<std::string, std::string>* metadata) const {
  char sum[32];
  std::snprintf(sum, sizeof(sum), "%.17g", sum_.item<double>());  // exact in decimal
  (*metadata)["interval_loss_sum"] = sum;
  (*metadata)["interval_steps"] = std::to_string(steps_);
}

void LossMeter::Import(const std::map<std::string, std::string>& metadata) {
  auto sum = metadata.find("interval_loss_sum");
  auto steps = metadata.find("interval_steps");
  if (sum == metadata.end() || steps == metadata.end()) return;  // saved at an evaluation
  sum_.fill_(std::stod(sum->second));
  steps_ = std::stoll(steps->second);
}

}  // namespace moa::trainer
