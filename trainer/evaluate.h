// Evaluation: one (domain, split) of a model in training (EvaluateSplit), and, after training,
// one adapter checkpoint or an ensemble of several (their logits averaged) on every (domain,
// split), and a backbone exported with LoRA merged into its frozen weights.
#pragma once

#include <string>
#include <vector>

#include <absl/status/statusor.h>

#include "data/dataset.h"
#include "moa/models.h"
#include "trainer/config.h"

namespace moa::trainer {

/// Accuracy and loss of one (domain, split): correct and total counts, summed loss.
struct SplitScore {
  int64_t correct = 0;
  int64_t total = 0;
  double loss_sum = 0;
};

/// Scores `indices` of `domain` with `model` (in eval mode, without autograd, on the model's
/// device; bf16 autocast when asked); sums stay on the device until the split is done.
SplitScore EvaluateSplit(ClassifierImpl& model, const data::Domain& domain,
                         const std::vector<int64_t>& indices, int64_t batch_size,
                         int64_t workers = 1, int64_t image_size = 224, bool bf16 = false);

struct DomainScore {
  std::string domain;
  std::string split;  // "in" or "out"
  int64_t correct = 0;
  int64_t total = 0;
  double accuracy() const { return total > 0 ? static_cast<double>(correct) / total : 0.0; }
};

/// Builds the configured model once per adapter file (backbone from model.backbone), loads each
/// file's trainable tensors (refusing files of another configuration), and scores the mean of
/// their logits on every domain's in and out splits.
absl::StatusOr<std::vector<DomainScore>> EvaluateAdapters(const RunConfig& config,
                                                          const std::vector<std::string>& adapters);

/// The configured model (backbone from model.backbone) with the trainable tensors of `adapters`
/// (a file of another configuration is refused), on `device`, in eval mode.
absl::StatusOr<std::shared_ptr<ClassifierImpl>> ModelWithAdapters(const RunConfig& config,
                                                                  const data::DatasetInfo& info,
                                                                  const std::string& adapters,
                                                                  const torch::Device& device);

/// The mean of the models' logits. With `share_prefix` (models built from one configuration
/// whose backbone is frozen) the blocks before the first adapted block are computed once, with
/// the first model, and every model continues from there.
torch::Tensor EnsembleLogits(const std::vector<std::shared_ptr<ClassifierImpl>>& models,
                             const torch::Tensor& images, bool share_prefix);

/// Loads `adapters` (LoRA) into the configured model, folds them into the frozen weights and
/// writes every parameter of the merged model (backbone with timm names, and the head) to `out`.
absl::Status ExportMerged(const RunConfig& config, const std::string& adapters,
                          const std::string& out);

/// The per-domain table `moa eval` prints.
std::string FormatDomainScores(const std::vector<DomainScore>& scores);

}  // namespace moa::trainer
