// The coordinator's reductions at an evaluation: every rank scores its shard of each (domain,
// split) and the sums (correct counts and totals exactly, loss sums in float64) go over all
// ranks, so every rank holds the record rank 0 writes; router statistics are summed over ranks
// the same way. Both are collectives: every rank calls them, in the same order.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "moa/moa_layer.h"
#include "moa/models.h"
#include "parallel/communicator.h"
#include "trainer/config.h"
#include "trainer/evaluate.h"

namespace moa::trainer {

/// This rank's contiguous share of an evaluation split's indices.
std::vector<int64_t> Shard(const std::vector<int64_t>& indices, int rank, int size);

/// Adds env{i}_{in,out}_{acc,loss} of every domain to `record` (eval.mode = fast skips the
/// training domains' `in` splits), each rank scoring its shard; with a cache, the frozen prefix
/// of each split is kept between evaluations (EvalPrefixCache).
absl::Status EvaluateDomains(ClassifierImpl& model, const data::DomainDataset& dataset,
                             const std::vector<int64_t>& train_envs, const RunConfig& config,
                             parallel::Communicator& world, nlohmann::ordered_json& record,
                             EvalPrefixCache* cache = nullptr);

/// Per MoA layer since the last call, summed over ranks: each expert's share of the routed
/// assignments, the assignments capacity dropped, and the mean auxiliary loss, as the array
/// results.jsonl's `router` holds; every layer's statistics restart.
absl::Status ReduceRouterStats(const std::vector<std::shared_ptr<MoaAdapterImpl>>& moa_layers,
                               parallel::Communicator& world, nlohmann::ordered_json* out);

/// The router statistics since the last evaluation, for a state saved between evaluations: counts
/// summed over ranks and the coordinator's auxiliary-loss sums, as checkpoint metadata (filled on
/// every rank; the coordinator saves it). A collective. ImportRouterStats gives the coordinator
/// those sums back on resume (the other ranks start from zero), so the next evaluation's record
/// is the uninterrupted run's.
absl::Status ExportRouterStats(const std::vector<std::shared_ptr<MoaAdapterImpl>>& moa_layers,
                               parallel::Communicator& world,
                               std::map<std::string, std::string>* metadata);
absl::Status ImportRouterStats(const std::vector<std::shared_ptr<MoaAdapterImpl>>& moa_layers,
                               const std::map<std::string, std::string>& metadata, bool lead);

/// train.check_replicas, after a step: the trainable tensors must be bit-identical on every rank;
/// an error names the first rank that differs from rank 0 and the step.
absl::Status CheckReplicas(const std::vector<torch::Tensor>& params, parallel::Communicator& world,
                           int64_t step);

}  // namespace moa::trainer
