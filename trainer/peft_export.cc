// PEFT's names for a LoRA on a timm module M: base_model.model.M.lora_A.weight (rank x in) and
// lora_B.weight (out x rank), scaled by lora_alpha / r; a module in modules_to_save is saved under
// base_model.model.M.<parameter>.
#include "trainer/peft_export.h"

#include <set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/safetensors.h"
#include "common/status_macros.h"
#include "moa/adapters.h"
#include "trainer/build.h"
#include "trainer/evaluate.h"

namespace moa::trainer {

absl::Status ExportPeft(const RunConfig& config, const std::string& adapters,
                        const std::string& dir) {
  const std::string& method = config.adapter.method;
  if (method != "lora") {
    return absl::InvalidArgumentError(
        "moa export --format peft writes LoRA adapters; adapter.method = " + method +
        (method == "moa" || method == "kadaptation"
             ? " has no PEFT equivalent (PEFT has neither a routed mixture of adapters nor "
               "KAdaptation's Kronecker experts). Use moa eval / moa predict with the checkpoint, "
               "and for LoRA runs `moa export --merge` folds the adapters into the backbone"
             : " trains the backbone's own weights: `moa export --merge` is not needed, the "
               "checkpoint already holds them"));
  }
  MOA_ASSIGN_OR_RETURN(const data::DatasetInfo info, ModelDatasetInfo(config));
  MOA_ASSIGN_OR_RETURN(auto model, ModelWithAdapters(config, info, adapters, torch::kCPU));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::vector<std::string> targets;
  std::set<double> scales;
  int64_t rank = 0;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    auto linear = std::dynamic_pointer_cast<AdaptableLinearImpl>(item.value());
    if (!linear || !linear->adapter()) continue;
    auto lora = std::dynamic_pointer_cast<LoraImpl>(linear->adapter());
    if (!lora) return absl::InvalidArgumentError(item.key() + " holds a non-LoRA adapter");
    const std::string base = "base_model.model." + item.key();
    tensors.emplace_back(base + ".lora_A.weight", lora->A.detach().contiguous());
    tensors.emplace_back(base + ".lora_B.weight", lora->B.detach().contiguous());
    targets.push_back(item.key());
    scales.insert(lora->options().scale());
    rank = lora->options().rank();
  }
  if (targets.empty()) return absl::InvalidArgumentError(adapters + ": the model has no LoRA");
  if (scales.size() != 1) {
    return absl::InvalidArgumentError(
        "the LoRA layers have different scales; PEFT's one "
        "lora_alpha cannot express them");
  }
  for (const auto& p : model->named_parameters()) {
    if (!p.value().requires_grad() || p.key().find(".lora.") != std::string::npos) continue;
    if (p.key().rfind("head.", 0) != 0) {
      return absl::InvalidArgumentError(p.key() +
                                        " trains, and PEFT's LoRA export holds only "
                                        "LoRA layers and the head");
    }
    tensors.emplace_back("base_model.model." + p.key(), p.value().detach().contiguous());
  }
  nlohmann::ordered_json peft;
  peft["peft_type"] = "LORA";
  peft["task_type"] = nullptr;
  peft["base_model_name_or_path"] = nullptr;
  peft["r"] = rank;
  // PEFT scales by lora_alpha / r.
  peft["lora_alpha"] = *scales.begin() * static_cast<double>(rank);
  peft["lora_dropout"] = 0.0;
  peft["target_modules"] = targets;
  peft["modules_to_save"] = {"head"};
  peft["bias"] = "none";
  peft["fan_in_fan_out"] = false;
  peft["use_rslora"] = false;
  peft["use_dora"] = false;
  peft["init_lora_weights"] = true;
  peft["inference_mode"] = true;
  MOA_RETURN_IF_ERROR(MakeDirs(dir));
  MOA_RETURN_IF_ERROR(WriteSafetensors(dir + "/adapter_model.safetensors", tensors,
                                       {{"format", "pt"}, {"moa_exported_from", adapters}}));
  return WriteFileAtomically(dir + "/adapter_config.json", peft.dump(2) + "\n");
}

}  // namespace moa::trainer
