#include "moa/weights.h"

#include <set>

#include "common/safetensors.h"
#include "common/status_macros.h"
#include "moa/peft.h"

namespace moa {
namespace {

std::string ShapeText(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// Copies the file's tensors into `targets`, requiring the same name set and shapes.
absl::Status CopyInto(const std::map<std::string, torch::Tensor>& targets,
                      const std::map<std::string, torch::Tensor>& source, const std::string& path) {
  std::string missing, mismatched, unexpected;
  for (const auto& [name, target] : targets) {
    auto it = source.find(name);
    if (it == source.end()) {
      missing += " " + name;
    } else if (it->second.sizes() != target.sizes()) {
      mismatched +=
          " " + name + " (file " + ShapeText(it->second) + ", model " + ShapeText(target) + ")";
    }
  }
  for (const auto& [name, tensor] : source) {
    if (targets.count(name) == 0) unexpected += " " + name;
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::string msg = "weights " + path + " do not fit the model:";
    if (!missing.empty()) msg += " missing" + missing + ";";
    if (!mismatched.empty()) msg += " shape mismatch" + mismatched + ";";
    if (!unexpected.empty()) msg += " not in the model" + unexpected + ";";
    return absl::InvalidArgumentError(msg);
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, target] : targets) {
    target.copy_(source.at(name).to(target.scalar_type()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SaveBackbone(const torch::nn::Module& model, const std::string& path,
                          const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model.named_parameters()) {
    if (GroupOf(p.key()) == ParameterGroup::kBackbone) tensors.emplace_back(p.key(), p.value());
  }
  return WriteSafetensors(path, tensors, metadata);
}

absl::Status LoadBackbone(torch::nn::Module& model, const std::string& path) {
  MOA_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : model.named_parameters()) {
    if (GroupOf(p.key()) == ParameterGroup::kBackbone) targets[p.key()] = p.value();
  }
  return CopyInto(targets, file.tensors, path);
}

absl::Status SaveTrainable(const torch::nn::Module& model, const std::string& path,
                           const std::map<std::string, std::string>& metadata) {
  return WriteSafetensors(path, TrainableParameters(model), metadata);
}

absl::Status LoadTrainable(torch::nn::Module& model, const std::string& path) {
  MOA_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  std::map<std::string, torch::Tensor> targets;
  for (auto& [name, tensor] : TrainableParameters(model)) targets[name] = tensor;
  return CopyInto(targets, file.tensors, path);
}

}  // namespace moa
