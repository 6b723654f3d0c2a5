#include "trainer/optimizer.h"

#include <map>

#include "trainer/state.h"

namespace moa::trainer {
namespace {

// The hyper-parameters Adam and AdamW share, read from either's options.
struct AdamSettings {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad;
};

template <typename Options>
AdamSettings ReadSettings(const Options& o) {
  return {o.lr(),  std::get<0>(o.betas()), std::get<1>(o.betas()),
          o.eps(), o.weight_decay(),       o.amsgrad()};
}

// The state torch::optim would create on its first step, so both paths share one layout.
template <typename State>
State& StateOf(torch::optim::Optimizer& optimizer, const torch::Tensor& p) {
  auto& slot = optimizer.state()[OptimizerStateKey(p)];
  if (!slot) {
    auto state = std::make_unique<State>();
    state->step(0);
    state->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    state->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    slot = std::move(state);
  }
  return static_cast<State&>(*slot);
}

template <typename State>
void FusedStep(torch::optim::Optimizer& optimizer, torch::optim::OptimizerParamGroup& group,
               const AdamSettings& s, bool decoupled, const torch::Tensor& skip) {
  std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps;
  // The kernel reads each parameter's step count (already advanced) from a float tensor on its
  // device, and only reads it: parameters at the same count share one tensor (usually all do; an
  // expert that got no token in some steps lags), so a step fills one or a few, not one each.
  std::map<int64_t, torch::Tensor> step_tensors;
  for (const torch::Tensor& p : group.params()) {
    if (!p.grad().defined()) continue;
    State& state = StateOf<State>(optimizer, p);
    if (s.amsgrad && !state.max_exp_avg_sq().defined()) {
      state.max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    }
    state.step(state.step() + 1);
    params.push_back(p.detach());
    grads.push_back(p.grad());
    exp_avgs.push_back(state.exp_avg());
    exp_avg_sqs.push_back(state.exp_avg_sq());
    if (s.amsgrad) max_exp_avg_sqs.push_back(state.max_exp_avg_sq());
    torch::Tensor& count = step_tensors[state.step()];
    if (!count.defined() || count.device() != p.device()) {
      count =
          torch::full({}, static_cast<double>(state.step()), p.options().dtype(torch::kFloat32));
    }
    steps.push_back(count);
  }
  if (params.empty()) return;
  std::optional<torch::Tensor> found_inf;
  if (skip.defined()) found_inf = skip;
  torch::NoGradGuard no_grad;
  if (decoupled) {
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, s.lr, s.beta1,
                      s.beta2, s.weight_decay, s.eps, s.amsgrad, /*maximize=*/false,
                      /*grad_scale=*/std::nullopt, found_inf);
  } else {
    at::_fused_adam_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, s.lr, s.beta1,
                     s.beta2, s.weight_decay, s.eps, s.amsgrad, /*maximize=*/false,
                     /*grad_scale=*/std::nullopt, found_inf);
  }
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const OptimConfig& config,
                                                       const std::vector<torch::Tensor>& params) {
  if (config.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(config.lr).weight_decay(config.weight_decay));
  }
  return std::make_unique<torch::optim::Adam>(
      params, torch::optim::AdamOptions(config.lr).weight_decay(config.weight_decay));
}

void StepOptimizer(torch::optim::Optimizer& optimizer, bool fused, const torch::Tensor& skip) {
  if (!fused) {
    if (skip.defined() && skip.item<float>() != 0.0f) return;
    optimizer.step();
    return;
  }
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
  for (auto& group : optimizer.param_groups()) {
    if (adamw) {
      FusedStep<torch::optim::AdamWParamState>(
          optimizer, group, ReadSettings(static_cast<torch::optim::AdamWOptions&>(group.options())),
          true, skip);
    } else {
      FusedStep<torch::optim::AdamParamState>(
          optimizer, group, ReadSettings(static_cast<torch::optim::AdamOptions&>(group.options())),
          false, skip);
    }
  }
}

}  // namespace moa::trainer
