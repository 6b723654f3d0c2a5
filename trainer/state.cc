#include "trainer/state.h"

#include <cstdio>
#include <map>
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>

#include "common/safetensors.h"
#include "common/status_macros.h"

namespace moa::trainer {
namespace {

// The fields Adam and AdamW keep per parameter.
struct AdamFields {
  int64_t step = 0;
  torch::Tensor exp_avg, exp_avg_sq, max_exp_avg_sq;
};

bool ReadFields(torch::optim::OptimizerParamState& state, AdamFields* out) {
  if (auto* s = dynamic_cast<torch::optim::AdamParamState*>(&state)) {
    *out = {s->step(), s->exp_avg(), s->exp_avg_sq(), s->max_exp_avg_sq()};
    return true;
  }
  if (auto* s = dynamic_cast<torch::optim::AdamWParamState*>(&state)) {
    *out = {s->step(), s->exp_avg(), s->exp_avg_sq(), s->max_exp_avg_sq()};
    return true;
  }
  return false;
}

template <typename State>
std::unique_ptr<torch::optim::OptimizerParamState> MakeState(const AdamFields& f) {
  auto s = std::make_unique<State>();
  s->step(f.step);
  s->exp_avg(f.exp_avg);
  s->exp_avg_sq(f.exp_avg_sq);
  if (f.max_exp_avg_sq.defined()) s->max_exp_avg_sq(f.max_exp_avg_sq);
  return s;
}

}  // namespace

OptimizerStateKeyType OptimizerStateKey(const torch::Tensor& p) { return p.unsafeGetTensorImpl(); }

absl::Status SaveTrainState(const std::string& path,
                            const std::vector<std::pair<std::string, torch::Tensor>>& named,
                            torch::optim::Optimizer& optimizer, const TrainState& state) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, p] : named) {
    tensors.emplace_back("param/" + name, p.detach());
    auto it = optimizer.state().find(OptimizerStateKey(p));
    if (it == optimizer.state().end()) continue;
    AdamFields f;
    if (!ReadFields(*it->second, &f))
      return absl::UnimplementedError("full-state checkpoints support Adam and AdamW");
    tensors.emplace_back("optim/step/" + name, torch::tensor({f.step}, torch::kInt64));
    tensors.emplace_back("optim/exp_avg/" + name, f.exp_avg);
    tensors.emplace_back("optim/exp_avg_sq/" + name, f.exp_avg_sq);
    if (f.max_exp_avg_sq.defined())
      tensors.emplace_back("optim/max_exp_avg_sq/" + name, f.max_exp_avg_sq);
  }
  tensors.emplace_back("rng/torch_cpu", at::detail::getDefaultCPUGenerator().get_state());
  for (const auto& [name, t] : state.extra_tensors) tensors.emplace_back("extra/" + name, t);
  std::map<std::string, std::string> metadata = state.extra_metadata;
  metadata["moa_step"] = std::to_string(state.step);
  char best[32];
  std::snprintf(best, sizeof(best), "%.17g", state.best_validation);  // exact round trip
  metadata["moa_best_validation"] = best;
  return WriteSafetensors(path, tensors, metadata);
}

absl::StatusOr<TrainState> LoadTrainState(
    const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& named,
    torch::optim::Optimizer& optimizer) {
  MOA_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  // The same trainable tensors, by name and shape, or a message saying what differs.
  std::string differences;
  std::map<std::string, bool> seen;
  for (const auto& [name, p] : named) {
    auto it = file.tensors.find("param/" + name);
    if (it == file.tensors.end()) {
      differences += " the checkpoint lacks " + name + ";";
    } else if (it->second.sizes() != p.sizes()) {
      differences += " " + name + " has another shape;";
    }
    seen["param/" + name] = true;
  }
  for (const auto& [key, t] : file.tensors) {
    if (key.rfind("param/", 0) == 0 && !seen.count(key))
      differences += " the run has no " + key.substr(6) + ";";
  }
  if (!differences.empty()) {
    return absl::FailedPreconditionError(
        "checkpoint " + path +
        " comes from another configuration (adapter shapes or placements):" + differences);
  }
  torch::NoGradGuard no_grad;
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
  for (const auto& [name, p] : named) {
    p.copy_(file.tensors.at("param/" + name));
    auto step = file.tensors.find("optim/step/" + name);
    if (step == file.tensors.end()) continue;
    AdamFields f;
    f.step = step->second.item<int64_t>();
    // The moments live where the parameter lives: a CPU checkpoint resumes on a GPU and back.
    // (The device is a local of its own because clang before 16 cannot capture a structured
    // binding.)
    const torch::Device device = p.device();
    const auto on_device = [&device](const torch::Tensor& t) {
      return t.to(device, /*non_blocking=*/false, /*copy=*/true);
    };
    f.exp_avg = on_device(file.tensors.at("optim/exp_avg/" + name));
    f.exp_avg_sq = on_device(file.tensors.at("optim/exp_avg_sq/" + name));
    auto max = file.tensors.find("optim/max_exp_avg_sq/" + name);
    if (max != file.tensors.end()) f.max_exp_avg_sq = on_device(max->second);
    optimizer.state()[OptimizerStateKey(p)] = adamw ? MakeState<torch::optim::AdamWParamState>(f)
                                                    : MakeState<torch::optim::AdamParamState>(f);
  }
  auto rng = file.tensors.find("rng/torch_cpu");
  if (rng != file.tensors.end()) {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng->second);
  }
  TrainState state;
  state.step = std::stoll(file.metadata.at("moa_step"));
  state.best_validation = std::stod(file.metadata.at("moa_best_validation"));
  for (const auto& [key, t] : file.tensors) {
    if (key.rfind("extra/", 0) == 0) state.extra_tensors.emplace_back(key.substr(6), t);
  }
  for (const auto& [key, value] : file.metadata) {
    if (key != "moa_step" && key != "moa_best_validation") state.extra_metadata[key] = value;
  }
  return state;
}

absl::Status BroadcastParameters(const std::vector<torch::Tensor>& params,
                                 torch::optim::Optimizer* optimizer, parallel::Communicator& group,
                                 int root) {
  torch::NoGradGuard no_grad;
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(optimizer) != nullptr;
  for (const torch::Tensor& p : params) {
    torch::Tensor value = p.detach();
    MOA_RETURN_IF_ERROR(group.Broadcast(value, root));
    if (optimizer == nullptr) continue;
    // The holder's step count (0: no state yet, nothing to copy; -1: an optimizer whose state
    // cannot be copied, which every rank must learn to fail together).
    AdamFields f;
    auto it = optimizer->state().find(OptimizerStateKey(p));
    if (group.rank() == root && it != optimizer->state().end() && !ReadFields(*it->second, &f)) {
      f.step = -1;
    }
    torch::Tensor step = torch::tensor({f.step}, torch::kInt64);
    MOA_RETURN_IF_ERROR(group.Broadcast(step, root));
    f.step = step.item<int64_t>();
    if (f.step < 0) {
      return absl::UnimplementedError("expert parallelism's checkpoints support Adam and AdamW");
    }
    if (f.step == 0) continue;
    if (group.rank() != root) {
      f.exp_avg = torch::zeros_like(value);
      f.exp_avg_sq = torch::zeros_like(value);
    }
    MOA_RETURN_IF_ERROR(group.Broadcast(f.exp_avg, root));
    MOA_RETURN_IF_ERROR(group.Broadcast(f.exp_avg_sq, root));
    if (group.rank() != root) {
      optimizer->state()[OptimizerStateKey(p)] = adamw ? MakeState<torch::optim::AdamWParamState>(f)
                                                       : MakeState<torch::optim::AdamParamState>(f);
    }
  }
  return absl::OkStatus();
}

}  // namespace moa::trainer
