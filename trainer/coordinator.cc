#include "trainer/coordinator.h"

#include <algorithm>
#include <cstdio>

#include <absl/strings/str_split.h>

#include "common/status_macros.h"
#include "trainer/evaluate.h"

namespace moa::trainer {

std::vector<int64_t> Shard(const std::vector<int64_t>& indices, int rank, int size) {
  const int64_t n = static_cast<int64_t>(indices.size());
  const int64_t begin = n * rank / size, end = n * (rank + 1) / size;
  return std::vector<int64_t>(indices.begin() + begin, indices.begin() + end);
}

absl::Status EvaluateDomains(ClassifierImpl& model, const data::DomainDataset& dataset,
                             const std::vector<int64_t>& train_envs, const RunConfig& config,
                             parallel::Communicator& world, nlohmann::ordered_json& record,
                             EvalPrefixCache* cache) {
  const bool fast = config.eval.mode == "fast";
  for (int64_t e = 0; e < static_cast<int64_t>(dataset.domains.size()); ++e) {
    const data::Domain& domain = dataset.domains[e];
    const bool training = std::find(train_envs.begin(), train_envs.end(), e) != train_envs.end();
    for (const char* split : {"in", "out"}) {
      const bool in = split[0] == 'i';
      if (in && fast && training) continue;
      const std::vector<int64_t>& indices = in ? domain.in : domain.out;
      if (indices.empty()) continue;
      const std::string key = "env" + std::to_string(e) + "_" + split;
      SplitScore score = EvaluateSplit(
          model, domain, Shard(indices, world.rank(), world.size()), config.eval.batch_size,
          config.data.workers, config.model.img_size, config.train.precision == "bf16", cache, key);
      // The coordinator's sums: correct counts and totals exactly, loss sums in float64.
      torch::Tensor counts = torch::tensor({score.correct, score.total}, torch::kInt64);
      torch::Tensor loss = torch::tensor({score.loss_sum}, torch::kFloat64);
      MOA_RETURN_IF_ERROR(world.AllReduce(counts, parallel::ReduceOp::kSum));
      MOA_RETURN_IF_ERROR(world.AllReduce(loss, parallel::ReduceOp::kSum));
      score.correct = counts[0].item<int64_t>();
      score.total = counts[1].item<int64_t>();
      score.loss_sum = loss.item<double>();
      record[key + "_acc"] = static_cast<double>(score.correct) / static_cast<double>(score.total);
      record[key + "_loss"] = score.loss_sum / static_cast<double>(score.total);
    }
  }
  return absl::OkStatus();
}

namespace {

// `local` with its assignment and drop counts summed over the ranks (a collective); the
// auxiliary-loss sums stay this rank's.
absl::StatusOr<RouterStats> SumRouterCounts(const RouterStats& local,
                                            parallel::Communicator& world) {
  std::vector<int64_t> counts = local.assignments;
  counts.push_back(local.dropped);
  torch::Tensor summed = torch::tensor(counts, torch::kInt64);
  MOA_RETURN_IF_ERROR(world.AllReduce(summed, parallel::ReduceOp::kSum));
  RouterStats stats = local;
  for (size_t e = 0; e < stats.assignments.size(); ++e) {
    stats.assignments[e] = summed[static_cast<int64_t>(e)].item<int64_t>();
  }
  stats.dropped = summed[static_cast<int64_t>(counts.size()) - 1].item<int64_t>();
  return stats;
}

}  // namespace

absl::Status ReduceRouterStats(const std::vector<std::shared_ptr<MoaAdapterImpl>>& moa_layers,
                               parallel::Communicator& world, nlohmann::ordered_json* out) {
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const auto& layer : moa_layers) {
    MOA_ASSIGN_OR_RETURN(const RouterStats stats, SumRouterCounts(layer->stats(), world));
    int64_t total = stats.dropped;
    for (int64_t a : stats.assignments) total += a;
    std::vector<double> share;
    for (int64_t a : stats.assignments)
      share.push_back(total > 0 ? static_cast<double>(a) / total : 0.0);
    nlohmann::ordered_json entry;
    entry["layer"] = layer->layer();
    entry["share"] = share;
    entry["dropped"] = stats.dropped;
    entry["aux_loss"] = stats.forwards > 0 ? stats.aux_sum / stats.forwards : 0.0;
    layers.push_back(entry);
    layer->ResetStats();
  }
  *out = layers;
  return absl::OkStatus();
}

absl::Status CheckReplicas(const std::vector<torch::Tensor>& params, parallel::Communicator& world,
                           int64_t step) {
  if (world.size() == 1) return absl::OkStatus();
  std::vector<torch::Tensor> flat;
  for (const torch::Tensor& p : params) flat.push_back(p.detach().reshape({-1}));
  MOA_ASSIGN_OR_RETURN(torch::Tensor all, world.AllGather(torch::cat(flat)));
  for (int r = 1; r < world.size(); ++r) {
    if (!torch::equal(all[r], all[0])) {
      return absl::InternalError("trainable parameters differ between rank 0 and rank " +
                                 std::to_string(r) + " after step " + std::to_string(step));
    }
  }
  return absl::OkStatus();
}

absl::Status ExportRouterStats(const std::vector<std::shared_ptr<MoaAdapterImpl>>& moa_layers,
                               parallel::Communicator& world,
                               std::map<std::string, std::string>* metadata) {
  for (const auto& layer : moa_layers) {
    MOA_ASSIGN_OR_RETURN(const RouterStats stats, SumRouterCounts(layer->stats(), world));
    std::string text;
    for (int64_t a : stats.assignments) text += std::to_string(a) + ",";
    text += std::to_string(stats.dropped) + ",";
    char aux[40];  // the coordinator's own: every rank holds the global auxiliary loss
    std::snprintf(aux, sizeof(aux), "%lld,%.17g", static_cast<long long>(stats.forwards),
                  stats.aux_sum);
    (*metadata)["router_stats_" + std::to_string(layer->layer())] = text + aux;
  }
  return absl::OkStatus();
}

absl::Status ImportRouterStats(const std::vector<std::shared_ptr<MoaAdapterImpl>>& moa_layers,
                               const std::map<std::string, std::string>& metadata, bool lead) {
  if (!lead) return absl::OkStatus();
  for (const auto& layer : moa_layers) {
    auto it = metadata.find("router_stats_" + std::to_string(layer->layer()));
    if (it == metadata.end()) continue;  // saved at an evaluation: nothing since
    std::vector<std::string> fields = absl::StrSplit(it->second, ',');
    const size_t experts = static_cast<size_t>(layer->num_experts());
    if (fields.size() != experts + 3) {
      return absl::DataLossError("router statistics of MoA layer " +
                                 std::to_string(layer->layer()) + " in the checkpoint have " +
                                 std::to_string(fields.size()) + " fields, expected " +
                                 std::to_string(experts + 3));
    }
    RouterStats stats;
    for (size_t e = 0; e < experts; ++e) stats.assignments.push_back(std::stoll(fields[e]));
    stats.dropped = std::stoll(fields[experts]);
    stats.forwards = std::stoll(fields[experts + 1]);
    stats.aux_sum = std::stod(fields[experts + 2]);
    layer->RestoreStats(stats);
  }
  return absl::OkStatus();
}

}  // namespace moa::trainer
