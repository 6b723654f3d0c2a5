#include "trainer/build.h"

#include <algorithm>

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

absl::Status CheckBackboneChosen(const RunConfig& config) {
  if (config.model.arch != "vit" || config.adapter.method == "full" ||
      !config.model.backbone.empty()) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      "model.backbone is empty, but adapter.method = " + config.adapter.method +
      " trains on a frozen backbone: set model.backbone to a CLIP ViT-B/16 weights file (timm's "
      "vit_base_patch16_clip_224.laion2b model.safetensors or open_clip's ViT-B-16 "
      "open_clip_model.safetensors; scripts/convert_to_safetensors.py converts open_clip's "
      ".bin/.pt pickle), or model.backbone = " +
      std::string(kRandomBackbone) + " for a random frozen backbone");
}

absl::StatusOr<std::shared_ptr<ClassifierImpl>> BuildModel(
    const RunConfig& config, const data::DatasetInfo& info,
    std::shared_ptr<const RoutingContext> routing) {
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
  MOA_RETURN_IF_ERROR(CheckBackboneChosen(config));
  torch::manual_seed(static_cast<uint64_t>(config.train.seed));
  MOA_ASSIGN_OR_RETURN(std::shared_ptr<ClassifierImpl> model, BuildClassifier(spec));
  if (!config.model.backbone.empty() && config.model.backbone != kRandomBackbone) {
    MOA_ASSIGN_OR_RETURN(ImportReport report,
                         LoadPretrainedBackbone(*model, config.model.backbone));
    Log(LogLevel::kInfo) << "backbone " << config.model.backbone << ": " << report.loaded
                         << " tensors (" << report.scheme << " names), " << report.ignored
                         << " outside the vision tower or CLIP's projection ignored";
  } else if (config.model.backbone == kRandomBackbone) {
    Log(LogLevel::kInfo) << "backbone: random initialisation (model.backbone = random)";
  }
  MOA_RETURN_IF_ERROR(ApplyPeft(*model, config.adapter, config.moa, std::move(routing)));
  return model;
}

data::StreamOptions TrainStreamOptions(const RunConfig& config,
                                       const std::vector<int64_t>& train_envs, int rank, int ranks,
                                       int64_t first_step, const torch::Device& device) {
  data::StreamOptions options;
  options.train_domains = train_envs;
  options.batch_size = config.data.batch_size;
  options.seed = config.train.seed;
  options.dp_rank = rank;
  options.dp_size = ranks;
  options.first_step = first_step;
  options.prefetch = std::max<int64_t>(2, config.data.workers * 2);
  options.workers = config.data.workers;
  options.image_size = config.model.img_size;
  options.pin_memory = device.is_cuda();
  return options;
}

std::shared_ptr<RoutingContext> TrainRoutingContext(const RunConfig& config, int64_t train_domains,
                                                    parallel::Communicator* batch_group) {
  auto context = std::make_shared<RoutingContext>();
  const int64_t rank = batch_group ? batch_group->rank() : 0;
  const int64_t ranks = batch_group ? batch_group->size() : 1;
  const int64_t per_rank = config.data.batch_size / ranks;
  context->seed = config.train.seed;
  context->global_batch = config.data.batch_size * train_domains;
  for (int64_t k = 0; k < train_domains; ++k) {
    for (int64_t j = 0; j < per_rank; ++j) {
      context->global_rows.push_back(k * config.data.batch_size + rank * per_rank + j);
    }
  }
  context->batch_group = batch_group;
  return context;
}

absl::Status CheckLayout(const RunConfig& config, const parallel::MeshLayout& layout) {
  if (layout.ep > 1 && config.adapter.method != "moa") {
    return absl::InvalidArgumentError("parallel.ep = " + std::to_string(layout.ep) +
                                      " shards MoA experts; it needs adapter.method = moa");
  }
  if (config.data.batch_size % layout.world_size != 0) {
    return absl::InvalidArgumentError(
        "data.batch_size = " + std::to_string(config.data.batch_size) +
        " does not divide among the " + std::to_string(layout.world_size) +
        " ranks (every rank takes an equal slice of each domain's minibatch)");
  }
  return absl::OkStatus();
}

}  // namespace moa::trainer
