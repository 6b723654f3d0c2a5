// `moa export --format peft`: a LoRA run's adapters in the layout Hugging Face PEFT reads for a
// timm ViT (adapter_config.json and adapter_model.safetensors), the new head as PEFT's
// `modules_to_save`, so `PeftModel.from_pretrained(timm_model, DIR)` computes what moa computes.
#pragma once

#include <string>

#include <absl/status/status.h>

#include "trainer/config.h"

namespace moa::trainer {

/// Writes DIR/adapter_config.json and DIR/adapter_model.safetensors for the LoRA checkpoint
/// `adapters` of `config`'s model. Other adapter methods (a routed mixture, Kronecker adapters,
/// attention or full fine-tuning) are refused with the commands that do handle them.
absl::Status ExportPeft(const RunConfig& config, const std::string& adapters,
                        const std::string& dir);

}  // namespace moa::trainer
