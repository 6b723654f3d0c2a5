#include "moa/pretrained.h"

#include <absl/strings/match.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_split.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "common/error.h"
#include "common/files.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "moa/peft.h"

namespace moa {
namespace {

// OpenCLIP's visual.transformer.resblocks.{i}.<rest> -> blocks.{i}.<ours>.
const std::map<std::string, std::string>& BlockRenames() {
  static const std::map<std::string, std::string> renames = {
      {"ln_1.weight", "norm1.weight"},
      {"ln_1.bias", "norm1.bias"},
      {"attn.in_proj_weight", "attn.qkv.weight"},
      {"attn.in_proj_bias", "attn.qkv.bias"},
      {"attn.out_proj.weight", "attn.proj.weight"},
      {"attn.out_proj.bias", "attn.proj.bias"},
      {"ln_2.weight", "norm2.weight"},
      {"ln_2.bias", "norm2.bias"},
      {"mlp.c_fc.weight", "mlp.fc1.weight"},
      {"mlp.c_fc.bias", "mlp.fc1.bias"},
      {"mlp.c_proj.weight", "mlp.fc2.weight"},
      {"mlp.c_proj.bias", "mlp.fc2.bias"},
  };
  return renames;
}

}  // namespace

ImportReport MapCheckpointNames(const std::map<std::string, torch::Tensor>& tensors,
                                std::map<std::string, torch::Tensor>* out) {
  ImportReport report;
  bool open_clip = false;
  for (const auto& [name, t] : tensors) open_clip |= absl::StartsWith(name, "visual.");
  report.scheme = open_clip ? "open_clip" : "timm";
  const std::string blocks_prefix = "visual.transformer.resblocks.";
  for (const auto& [name, tensor] : tensors) {
    std::string ours;
    torch::Tensor value = tensor;
    if (!open_clip) {
      // timm: our names already; its `head` (CLIP's projection) is not our classifier.
      if (absl::StartsWith(name, "head.")) {
        ++report.ignored;
        continue;
      }
      ours = name;
    } else if (!absl::StartsWith(name, "visual.") || name == "visual.proj") {
      ++report.ignored;  // the text tower, logit_scale, and the 768 -> 512 CLIP projection
      continue;
    } else if (name == "visual.conv1.weight") {
      ours = "patch_embed.proj.weight";
    } else if (name == "visual.class_embedding") {
      ours = "cls_token";
      value = tensor.reshape({1, 1, -1});
    } else if (name == "visual.positional_embedding") {
      ours = "pos_embed";
      value = tensor.unsqueeze(0);
    } else if (absl::StartsWith(name, "visual.ln_pre.")) {
      ours = "norm_pre." + name.substr(std::string("visual.ln_pre.").size());
    } else if (absl::StartsWith(name, "visual.ln_post.")) {
      ours = "norm." + name.substr(std::string("visual.ln_post.").size());
    } else if (absl::StartsWith(name, blocks_prefix)) {
      const std::string rest = name.substr(blocks_prefix.size());
      const size_t dot = rest.find('.');
      auto it = BlockRenames().find(rest.substr(dot + 1));
      if (dot == std::string::npos || it == BlockRenames().end()) {
        ours = name;  // unknown: reported as not in the model
      } else {
        ours = "blocks." + rest.substr(0, dot) + "." + it->second;
      }
    } else {
      ours = name;
    }
    (*out)[ours] = value;
  }
  return report;
}

absl::StatusOr<std::map<std::string, torch::Tensor>> ReadCheckpointTensors(
    const std::string& path) {
  char magic[4] = {0, 0, 0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError("cannot open checkpoint " + path);
    in.read(magic, 4);
  }
  if (std::memcmp(magic, "PK\x03\x04", 4) == 0) {
    MOA_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
    // A PyTorch zip pickle (torch.save of a state dict).
    try {
      const std::vector<char> data(bytes.begin(), bytes.end());
      const c10::IValue value = torch::pickle_load(data);
      if (!value.isGenericDict()) {
        return absl::InvalidArgumentError("checkpoint " + path +
                                          " does not hold a dict of tensors");
      }
      std::map<std::string, torch::Tensor> tensors;
      for (const auto& item : value.toGenericDict()) {
        if (item.key().isString() && item.value().isTensor()) {
          tensors[item.key().toStringRef()] = item.value().toTensor();
        }
      }
      return tensors;
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(
          "checkpoint " + path + " is a PyTorch pickle LibTorch cannot read (" +
          ExceptionMessage(e).substr(0, 200) +
          "); convert it with bash scripts/python.sh scripts/convert_to_safetensors.py");
    }
  }
  MOA_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  return std::move(file.tensors);
}

absl::StatusOr<ImportReport> LoadPretrainedBackbone(torch::nn::Module& model,
                                                    const std::string& path) {
  MOA_ASSIGN_OR_RETURN(auto tensors, ReadCheckpointTensors(path));
  std::map<std::string, torch::Tensor> mapped;
  ImportReport report = MapCheckpointNames(tensors, &mapped);
  std::string missing, mismatched, unexpected;
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : model.named_parameters()) {
    if (GroupOf(p.key()) == ParameterGroup::kBackbone) targets[p.key()] = p.value();
  }
  for (const auto& [name, target] : targets) {
    auto it = mapped.find(name);
    if (it == mapped.end()) {
      missing += " " + name;
    } else if (it->second.sizes() != target.sizes()) {
      mismatched += " " + name;
    }
  }
  for (const auto& [name, t] : mapped) {
    if (targets.count(name) == 0) unexpected += " " + name;
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::string msg = "backbone " + path + " (" + report.scheme + " names) does not fit the model:";
    if (!missing.empty()) msg += " missing" + missing + ";";
    if (!mismatched.empty()) msg += " shape mismatch" + mismatched + ";";
    if (!unexpected.empty()) msg += " vision-tower tensors the model lacks" + unexpected + ";";
    return absl::InvalidArgumentError(msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    target.copy_(mapped.at(name).to(target.scalar_type()));
    ++report.loaded;
  }
  return report;
}

}  // namespace moa
