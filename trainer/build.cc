#include "trainer/build.h"

#include "common/logging.h"
#include "common/status_macros.h"
#include "moa/factory.h"
#include "moa/peft.h"
#include "moa/pretrained.h"

namespace moa::trainer {

absl::StatusOr<data::LoadOptions> DatasetOptions(const RunConfig& config) {
  data::LoadOptions load;
  load.dataset = config.data.dataset;
  load.data_dir = config.data.data_dir;
  MOA_ASSIGN_OR_RETURN(load.source, data::ParseIdxSource(config.data.source));
  load.seed = config.train.seed;
  load.trial_seed = config.train.trial_seed;
  load.holdout_fraction = config.data.holdout_fraction;
  load.max_per_domain = config.data.max_per_domain;
  load.check = config.data.check;
  load.skip_corrupt = config.data.skip_corrupt;
  load.workers = static_cast<int>(std::max<int64_t>(1, config.data.workers));
  return load;
}

absl::StatusOr<data::DatasetInfo> ModelDatasetInfo(const RunConfig& config) {
  if (config.model.num_classes == 0) {
    return data::DescribeDataset(config.data.dataset, config.data.data_dir);
  }
  MOA_ASSIGN_OR_RETURN(data::DatasetInfo info, data::LookupDataset(config.data.dataset));
  info.num_classes = config.model.num_classes;
  return info;
}

absl::StatusOr<std::shared_ptr<ClassifierImpl>> BuildModel(const RunConfig& config,
                                                           const data::DatasetInfo& info) {
  ModelSpec spec;
  spec.arch = config.model.arch;
  spec.vit.img_size(config.model.img_size)
      .patch_size(config.model.patch_size)
      .in_chans(info.channels)
      .dim(config.model.dim)
      .depth(config.model.depth)
      .heads(config.model.heads)
      .mlp_ratio(config.model.mlp_ratio)
      .norm_pre(config.model.norm_pre)
      .norm_eps(config.model.norm_eps)
      .num_classes(config.model.num_classes > 0 ? config.model.num_classes : info.num_classes);
  if (spec.arch == "vit" && config.model.img_size != info.image_size) {
    return absl::InvalidArgumentError("model.img_size = " + std::to_string(config.model.img_size) +
                                      " but " + info.name + " images are " +
                                      std::to_string(info.image_size) + " pixels wide");
  }
  // The initialisation is seeded on its own (not continuing after the dataset's randperm as in
  // DomainBed), so every command that builds this configuration gets the same random weights.
  torch::manual_seed(static_cast<uint64_t>(config.train.seed));
  MOA_ASSIGN_OR_RETURN(std::shared_ptr<ClassifierImpl> model, BuildClassifier(spec));
  if (!config.model.backbone.empty()) {
    MOA_ASSIGN_OR_RETURN(ImportReport report,
                         LoadPretrainedBackbone(*model, config.model.backbone));
    Log(LogLevel::kInfo) << "backbone " << config.model.backbone << ": " << report.loaded
                         << " tensors (" << report.scheme << " names), " << report.ignored
                         << " outside the vision tower or CLIP's projection ignored";
  }
  MOA_RETURN_IF_ERROR(ApplyPeft(*model, config.adapter, config.moa));
  return model;
}

}  // namespace moa::trainer
