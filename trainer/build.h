// From a configuration to the objects a run needs, touching no data: the classifier (seeded
// init, PEFT applied, pretrained backbone loaded), what it needs to know of the dataset, and the
// dataset's load options.
#pragma once

#include <memory>

#include <absl/status/statusor.h>

#include "data/dataset.h"
#include "data/stream.h"
#include "moa/models.h"
#include "moa/routing.h"
#include "parallel/communicator.h"
#include "parallel/mesh_layout.h"
#include "trainer/config.h"

namespace moa::trainer {

/// The model.backbone value that asks for a randomly initialised backbone.
inline constexpr char kRandomBackbone[] = "random";

/// A ViT that trains on a frozen backbone (every adapter.method but full) needs model.backbone
/// said: a weights file, or kRandomBackbone. An empty value is an error that says how to get
/// CLIP ViT-B/16 weights; any other architecture or method is fine.
absl::Status CheckBackboneChosen(const RunConfig& config);

/// Builds the configured classifier (initialised from train.seed), applies PEFT and loads
/// model.backbone unless it is empty or kRandomBackbone (refused where CheckBackboneChosen
/// refuses it); the data set's info gives channels and classes when model.num_classes is 0.
/// Touches no data. MoA layers read `routing` (see ApplyPeft).
absl::StatusOr<std::shared_ptr<ClassifierImpl>> BuildModel(
    const RunConfig& config, const data::DatasetInfo& info,
    std::shared_ptr<const RoutingContext> routing = nullptr);

/// What BuildModel needs to know of the configured dataset, without loading it: the registry's
/// description with model.num_classes when that is set, else the dataset's own classes
/// (ImageFolder's from a scan of data.data_dir's folders: data::DescribeDataset).
absl::StatusOr<data::DatasetInfo> ModelDatasetInfo(const RunConfig& config);

/// The run's layout against the configuration: parallel.ep > 1 needs adapter.method = moa, and
/// data.batch_size must divide among the world's ranks.
absl::Status CheckLayout(const RunConfig& config, const parallel::MeshLayout& layout);

/// The training stream of rank `rank` of `ranks`: every rank, data- or expert-parallel, takes its
/// own slice of each training domain's global minibatch, from `first_step` on.
data::StreamOptions TrainStreamOptions(const RunConfig& config,
                                       const std::vector<int64_t>& train_envs, int rank, int ranks,
                                       int64_t first_step, const torch::Device& device);

/// The routing context of rank `rank` of the ranks of `batch_group` (null: one process): the
/// global batch's size and this rank's rows of it (domain-major, each rank holding a contiguous
/// slice of every domain's minibatch), so keyed router noise is the same at any world size.
std::shared_ptr<RoutingContext> TrainRoutingContext(const RunConfig& config, int64_t train_domains,
                                                    parallel::Communicator* batch_group);

/// The dataset options a configuration describes.
absl::StatusOr<data::LoadOptions> DatasetOptions(const RunConfig& config);

}  // namespace moa::trainer
