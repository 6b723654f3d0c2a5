// Parameter-efficient fine-tuning setup: which parameters train (full, attention-only, adapters)
// and injection of adapters into a ViT by rule (adapter.blocks x adapter.targets), plus the
// parameter counts `moa info` prints, split into backbone, adapters, router and head.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/torch.h>

#include "moa/moa_layer.h"
#include "moa/models.h"

namespace moa {

struct PeftOptions {
  std::string method = "lora";  // full, attention, lora, kadaptation, moa
  int64_t rank = 2;
  double alpha = 0.0;          // 0: scale 1 as the reference; > 0: PEFT's alpha / rank
  std::string blocks = "all";  // all, every_other, last:N, or a list "0,2,5"
  std::string targets = "qkv,proj";
};

/// The block indices `rule` selects among `depth` blocks; an error names the bad rule.
absl::StatusOr<std::vector<int64_t>> SelectBlocks(const std::string& rule, int64_t depth);
/// The Linear names of a block that `rule` selects (a comma list of qkv, proj, fc1, fc2).
absl::StatusOr<std::vector<std::string>> SelectTargets(const std::string& rule);

/// Injects adapters (lora, kadaptation, moa with the [moa] settings) and sets requires_grad: only
/// adapters, routers and the head train in PEFT modes; `attention` trains the qkv and proj
/// weights and biases plus the head; `full` trains all. MoA layers read the step facts from
/// `routing` (the trainer's); without one each layer has its own, for a local batch at step 0.
absl::Status ApplyPeft(ClassifierImpl& model, const PeftOptions& options, const MoaConfig& moa = {},
                       std::shared_ptr<const RoutingContext> routing = nullptr);

/// Folds every LoRA adapter into its frozen Linear (W += scale B A) and removes the adapters, so
/// the model computes the same function without them. Refuses models with other adapters (a
/// mixture's routing cannot be folded into one weight).
absl::Status MergeLora(ClassifierImpl& model);

/// The model's MoA layers, in injection (= layer index) order.
std::vector<std::shared_ptr<MoaAdapterImpl>> MoaLayers(const torch::nn::Module& model);

/// Sum of the MoA layers' auxiliary losses of the last training forward (a zero scalar when
/// there is none).
torch::Tensor AuxiliaryLoss(const torch::nn::Module& model);

/// What a parameter belongs to, from its name.
enum class ParameterGroup { kBackbone, kAdapter, kRouter, kHead };
ParameterGroup GroupOf(const std::string& name);

struct ParameterCounts {
  int64_t backbone = 0;
  int64_t adapters = 0;
  int64_t router = 0;
  int64_t head = 0;
  int64_t trainable = 0;
  int64_t total() const { return backbone + adapters + router + head; }
};
ParameterCounts CountParameters(const torch::nn::Module& model);

/// The parameters that require grad, by name, in registration order.
std::vector<std::pair<std::string, torch::Tensor>> TrainableParameters(
    const torch::nn::Module& model);

}  // namespace moa
