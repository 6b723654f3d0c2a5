#include "launch/hparams.h"

#include <absl/strings/str_join.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/splitmix.h"
#include "data/splits.h"

namespace moa::launch {
namespace {

std::string FormatNumber(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.6g", v);
  return text;
}

using Draw = std::function<std::string(double, const trainer::RunConfig&, int64_t)>;

// 10^U(low, high).
Draw LogUniform(double low, double high) {
  return [=](double u, const trainer::RunConfig&, int64_t) {
    return FormatNumber(std::pow(10.0, low + u * (high - low)));
  };
}

Draw Choice(std::vector<std::string> values) {
  return [values](double u, const trainer::RunConfig&, int64_t) {
    const size_t i = std::min(values.size() - 1, static_cast<size_t>(u * values.size()));
    return values[i];
  };
}

// int(2^U(3, 5.5)) as DomainBed, rounded down to a multiple of the job's world size, so that the
// global batch divides among its ranks (every rank, data- or expert-parallel, takes a slice).
std::string DrawBatchSize(double u, const trainer::RunConfig&, int64_t world_size) {
  const int64_t batch = static_cast<int64_t>(std::pow(2.0, 3.0 + u * 2.5));
  const int64_t ranks = std::max<int64_t>(1, world_size);
  return std::to_string(std::max(ranks, batch / ranks * ranks));
}

// Top-k of 1 or 2, never more than the experts of moa.ranks.
std::string DrawTopK(double u, const trainer::RunConfig& base, int64_t) {
  const int64_t experts = static_cast<int64_t>(base.moa.ranks.size());
  return std::to_string(std::min<int64_t>(experts, u < 0.5 ? 1 : 2));
}

uint64_t NameKey(const std::string& name) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ULL;
  return h;
}

}  // namespace

const std::vector<HparamRange>& HparamRegistry() {
  static const std::vector<HparamRange> registry = {
      {"optim.lr", {"full", "attention"}, "10^U(-5.5, -4)", LogUniform(-5.5, -4.0)},
      {"optim.lr", {"lora", "kadaptation", "moa"}, "10^U(-4.5, -2.5)", LogUniform(-4.5, -2.5)},
      {"optim.weight_decay", {}, "10^U(-6, -2)", LogUniform(-6.0, -2.0)},
      {"data.batch_size", {}, "int(2^U(3, 5.5)), a multiple of the job's ranks", DrawBatchSize},
      {"adapter.rank",
       {"lora", "kadaptation"},
       "one of 1, 2, 4, 8, 16",
       Choice({"1", "2", "4", "8", "16"})},
      {"adapter.alpha",
       {"lora"},
       "one of 0 (scale 1), 8, 16, 32 (scale alpha/rank)",
       Choice({"0", "8", "16", "32"})},
      {"moa.top_k", {"moa"}, "1 or 2 (at most the experts)", DrawTopK},
      {"moa.router", {"moa"}, "cosine or linear", Choice({"cosine", "linear"})},
      {"moa.noise", {"moa"}, "true or false", Choice({"true", "false"})},
      {"moa.aux_weight", {"moa"}, "10^U(-3, -1)", LogUniform(-3.0, -1.0)},
  };
  return registry;
}

double HparamUniform(int64_t hparams_seed, int64_t trial_seed, const std::string& key) {
  const uint64_t seed = data::SeedHash(hparams_seed, trial_seed);
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ NameKey(key));
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);  // 53 bits in [0, 1)
}

std::vector<std::pair<std::string, std::string>> DrawHparams(const trainer::RunConfig& base,
                                                             int64_t world_size,
                                                             int64_t hparams_seed,
                                                             int64_t trial_seed,
                                                             const std::set<std::string>& pinned) {
  std::vector<std::pair<std::string, std::string>> drawn;
  if (hparams_seed == 0) return drawn;
  const std::string& method = base.adapter.method;
  for (const HparamRange& range : HparamRegistry()) {
    if (pinned.count(range.key)) continue;
    if (!range.methods.empty() &&
        std::find(range.methods.begin(), range.methods.end(), method) == range.methods.end()) {
      continue;
    }
    drawn.emplace_back(range.key, range.draw(HparamUniform(hparams_seed, trial_seed, range.key),
                                             base, world_size));
  }
  return drawn;
}

absl::StatusOr<LaunchConfig> LoadConfigWithDraw(
    const std::string& config_path, const std::vector<std::string>& overrides, int64_t world_size,
    std::vector<std::pair<std::string, std::string>>* drawn) {
  if (drawn != nullptr) drawn->clear();
  absl::StatusOr<LaunchConfig> config = LoadLaunchConfig(config_path, overrides);
  if (!config.ok()) return config;
  const trainer::TrainConfig& train = config->run.train;
  if (train.hparams_seed <= 0 || !train.resume.empty()) return config;
  std::set<std::string> pinned;
  for (const std::string& o : overrides) pinned.insert(SplitOverride(o).first);
  const auto draw =
      DrawHparams(config->run, world_size, train.hparams_seed, train.trial_seed, pinned);
  if (drawn != nullptr) *drawn = draw;
  if (draw.empty()) return config;
  // The draw first: a key given twice takes its last value, and the user's keys are not drawn.
  std::vector<std::string> with_draw;
  for (const auto& [key, value] : draw) with_draw.push_back("--" + key + "=" + value);
  with_draw.insert(with_draw.end(), overrides.begin(), overrides.end());
  absl::StatusOr<LaunchConfig> drawn_config = LoadLaunchConfig(config_path, with_draw);
  if (!drawn_config.ok()) {
    return absl::InvalidArgumentError("train.hparams_seed=" + std::to_string(train.hparams_seed) +
                                      ": the drawn values do not make a valid configuration: " +
                                      std::string(drawn_config.status().message()));
  }
  return drawn_config;
}

std::string HparamRegistryHelp() {
  std::string text;
  for (const HparamRange& range : HparamRegistry()) {
    char line[256];
    std::snprintf(
        line, sizeof(line), "  %-20s %-28s %s\n", range.key.c_str(),
        range.methods.empty() ? "every method" : absl::StrJoin(range.methods, ", ").c_str(),
        range.range.c_str());
    text += line;
  }
  return text;
}

}  // namespace moa::launch
