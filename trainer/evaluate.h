// Evaluation: one (domain, split) of a model in training (EvaluateSplit), and, after training,
// one adapter checkpoint or an ensemble of several (their logits averaged) on every (domain,
// split), and a backbone exported with LoRA merged into its frozen weights.
#pragma once

#include <map>
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

/// Where nothing in a ViT's embedding and first blocks trains (adapter methods, up to the first
/// adapted block), their output for an evaluation image is the same at every evaluation. This keeps
/// it for whole splits (per batch, with the labels) up to a byte budget, so that later evaluations
/// of a cached split start at the first trained block and decode no image.
class EvalPrefixCache {
 public:
  struct Batch {
    torch::Tensor prefix;  // the embedding and frozen blocks' output
    torch::Tensor labels;
  };
  explicit EvalPrefixCache(int64_t budget_bytes) : budget_(budget_bytes) {}
  /// The batches of split `key` of `samples` samples, or null if not cached.
  const std::vector<Batch>* Find(const std::string& key, int64_t samples) const;
  /// Whether `bytes` more would still fit.
  bool Fits(int64_t bytes) const { return bytes_ + bytes <= budget_; }
  void Store(const std::string& key, int64_t samples, std::vector<Batch> batches);
  int64_t bytes() const { return bytes_; }
  /// Splits served from the cache so far.
  int64_t hits() const { return hits_; }

 private:
  struct Entry {
    int64_t samples = 0;
    std::vector<Batch> batches;
  };
  int64_t budget_;
  int64_t bytes_ = 0;
  mutable int64_t hits_ = 0;
  std::map<std::string, Entry> splits_;
};

/// The number of leading ViT blocks that, with the patch embedding, train nothing (0 when the
/// model is no ViT or its embedding trains): the part of the forward EvalPrefixCache may keep.
int64_t FrozenPrefixBlocks(ClassifierImpl& model);

/// Scores `indices` of `domain` with `model` (in eval mode, without autograd, on the model's
/// device; bf16 autocast when asked); sums stay on the device until the split is done. With a
/// cache, the frozen prefix of split `cache_key` is taken from it or computed and offered to it.
SplitScore EvaluateSplit(ClassifierImpl& model, const data::Domain& domain,
                         const std::vector<int64_t>& indices, int64_t batch_size,
                         int64_t workers = 1, int64_t image_size = 224, bool bf16 = false,
                         EvalPrefixCache* cache = nullptr, const std::string& cache_key = "");

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
