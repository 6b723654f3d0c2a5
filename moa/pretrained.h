// Loading the ViT backbones users download: timm checkpoints (our own parameter names; timm's
// 512-wide CLIP `head` is not our classifier and is skipped) and OpenCLIP ones (`visual.*`:
// conv1, class_embedding, positional_embedding, ln_pre, transformer.resblocks.{i}.ln_1/attn.
// in_proj_*/attn.out_proj/ln_2/mlp.c_fc/mlp.c_proj, ln_post; the CLIP projection `proj` skipped),
// from safetensors, or from PyTorch zip pickles that LibTorch can read. Keys outside the vision
// tower are ignored and counted; a missing vision-tower key or a shape mismatch is an error
// listing the names.
#pragma once

#include <map>
#include <string>

#include <absl/status/statusor.h>
#include <torch/torch.h>

namespace moa {

struct ImportReport {
  std::string scheme;   // "timm" or "open_clip"
  int64_t loaded = 0;   // backbone tensors copied
  int64_t ignored = 0;  // tensors outside the vision tower, or the CLIP projection / head
};

/// Maps a checkpoint's names to ours; returns the renamed vision-tower tensors in `out` and the
/// number of ignored tensors.
ImportReport MapCheckpointNames(const std::map<std::string, torch::Tensor>& tensors,
                                std::map<std::string, torch::Tensor>* out);

/// Reads a checkpoint file's tensors: safetensors, or a PyTorch zip pickle of a state dict.
absl::StatusOr<std::map<std::string, torch::Tensor>> ReadCheckpointTensors(const std::string& path);

/// Loads a downloaded or moa-written backbone into `model` (dtypes converted to the model's).
absl::StatusOr<ImportReport> LoadPretrainedBackbone(torch::nn::Module& model,
                                                    const std::string& path);

}  // namespace moa
