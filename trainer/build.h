// From a configuration to the objects a run needs, touching no data: the classifier (seeded
// init, PEFT applied, pretrained backbone loaded), what it needs to know of the dataset, and the
// dataset's load options.
#pragma once

#include <memory>

#include <absl/status/statusor.h>

#include "data/dataset.h"
#include "moa/models.h"
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

/// The dataset options a configuration describes.
absl::StatusOr<data::LoadOptions> DatasetOptions(const RunConfig& config);

}  // namespace moa::trainer
