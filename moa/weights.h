// Named-weight I/O for models: backbones (every parameter outside the head and the adapters,
// with timm's names) and trainable-only adapter files, both as safetensors.
#pragma once

#include <map>
#include <string>

#include <absl/status/status.h>
#include <torch/torch.h>

namespace moa {

/// Writes the backbone parameters (GroupOf == kBackbone) of `model` to `path`.
absl::Status SaveBackbone(const torch::nn::Module& model, const std::string& path,
                          const std::map<std::string, std::string>& metadata = {});

/// Loads backbone parameters from `path` into `model`, converting dtypes to the model's.
/// Missing backbone parameters and shape mismatches are errors listing the names; tensors of the
/// file that the model lacks are errors too.
absl::Status LoadBackbone(torch::nn::Module& model, const std::string& path);

/// Writes the parameters that require grad.
absl::Status SaveTrainable(const torch::nn::Module& model, const std::string& path,
                           const std::map<std::string, std::string>& metadata = {});

/// Loads a trainable-only file into the matching parameters of `model`; names and shapes must
/// match the model's trainable parameters exactly.
absl::Status LoadTrainable(torch::nn::Module& model, const std::string& path);

}  // namespace moa
