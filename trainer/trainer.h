// The training loop (DomainBed's ERM protocol): every step takes one minibatch from each
// training domain, runs one forward and backward on their concatenation and an Adam/AdamW step
// on the trainable parameters; every checkpoint_freq steps and at the last step it evaluates every
// (domain, split), appends a record to results.jsonl, updates model selection and saves the
// selected adapters. `Pretrain` trains a whole classifier on one upright domain and saves its
// backbone for `moa train` to start from.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "moa/models.h"
#include "parallel/communicator.h"
#include "trainer/config.h"

namespace moa::trainer {

/// Builds the configured classifier (initialised from train.seed), applies PEFT and loads
/// model.backbone when set; the data set's info gives channels and classes when
/// model.num_classes is 0. Touches no data.
absl::StatusOr<std::shared_ptr<ClassifierImpl>> BuildModel(const RunConfig& config,
                                                           const data::DatasetInfo& info);

/// What BuildModel needs to know of the configured dataset, without loading it: the registry's
/// description with model.num_classes when that is set, else the dataset's own classes
/// (ImageFolder's from a scan of data.data_dir's folders: data::DescribeDataset).
absl::StatusOr<data::DatasetInfo> ModelDatasetInfo(const RunConfig& config);

/// Accuracy and loss of one (domain, split).
struct SplitScore {
  int64_t correct = 0;
  int64_t total = 0;
  double loss_sum = 0;
};
SplitScore EvaluateSplit(ClassifierImpl& model, const data::Domain& domain,
                         const std::vector<int64_t>& indices, int64_t batch_size,
                         int64_t workers = 1, int64_t image_size = 224, bool bf16 = false);

/// The dataset options a configuration describes.
absl::StatusOr<data::LoadOptions> DatasetOptions(const RunConfig& config);

struct RunSummary {
  std::vector<nlohmann::json> records;
  std::string selection_table;  // empty without a test env
  std::string run_dir;
};

/// Trains as the configuration says and writes the run directory (config.ini, env.json,
/// results.jsonl, checkpoints/, selection.txt, done).
/// With `world` (the job's communicator; null: this process alone) every rank calls Train; rank
/// 0 coordinates and alone writes the run files.
absl::StatusOr<RunSummary> Train(const RunConfig& config, parallel::Communicator* world = nullptr);

/// Trains every parameter on the configured dataset (all its domains are training domains) and
/// writes output.dir/backbone.safetensors besides the run files.
absl::StatusOr<RunSummary> Pretrain(const RunConfig& config,
                                    parallel::Communicator* world = nullptr);

}  // namespace moa::trainer
