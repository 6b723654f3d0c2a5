#include "launch/checkpoint_config.h"

#include <absl/strings/match.h>
#include <absl/strings/str_join.h>

#include <set>
#include <utility>

#include "common/safetensors.h"
#include "common/status_macros.h"
#include "launch/option_table.h"
#include "trainer/build.h"

namespace moa::launch {
namespace {

std::string Value(const LaunchConfig& config, const std::string& key) {
  return FindOption(key)->print(config);
}

// The configuration stored in `adapter`, or an empty text when it stores none.
absl::StatusOr<std::string> StoredConfigText(const std::string& adapter) {
  MOA_ASSIGN_OR_RETURN(const auto metadata, ReadSafetensorsMetadata(adapter));
  const auto found = metadata.find("moa_config");
  return found == metadata.end() ? std::string() : found->second;
}

// Keys that decide each domain's in/out split of `dataset`: the MNIST family's images are the IDX
// files' that data.source names, and the rotated datasets' domains are drawn from them
// (train.seed).
std::vector<std::string> SplitKeys(const std::string& dataset) {
  std::vector<std::string> keys = {"data.holdout_fraction", "data.max_per_domain",
                                   "train.trial_seed"};
  if (absl::StrContains(dataset, "MNIST")) keys.push_back("data.source");
  if (absl::StartsWith(dataset, "Rotated")) keys.push_back("train.seed");
  return keys;
}

bool RandomBackbone(const LaunchConfig& config) {
  return config.run.model.backbone == trainer::kRandomBackbone;
}

}  // namespace

std::vector<std::string> ModelKeys(const LaunchConfig& config) {
  const std::string& method = config.run.adapter.method;
  std::vector<std::string> keys = {"model.arch", "model.img_size", "adapter.method"};
  if (config.run.model.arch == "vit") {
    keys.insert(keys.end(), {"model.patch_size", "model.dim", "model.depth", "model.heads",
                             "model.mlp_ratio", "model.norm_pre", "model.norm_eps"});
  }
  if (method == "lora") {
    keys.insert(keys.end(), {"adapter.rank", "adapter.alpha", "adapter.blocks", "adapter.targets"});
  } else if (method == "kadaptation") {
    keys.insert(keys.end(), {"adapter.rank", "adapter.blocks", "adapter.targets", "moa.phm_dim"});
  } else if (method == "moa") {
    keys.insert(keys.end(), {"adapter.blocks", "adapter.targets", "moa.expert", "moa.ranks",
                             "moa.top_k", "moa.router", "moa.proj_dim", "moa.renormalize"});
    if (config.run.moa.expert == "kronecker") keys.push_back("moa.phm_dim");
  }
  // A frozen random backbone's weights are drawn from train.seed; `full` saves every weight.
  if (method != "full" && RandomBackbone(config)) keys.push_back("train.seed");
  return keys;
}

absl::StatusOr<LaunchConfig> ConfigForCheckpoints(const std::string& config_path,
                                                  const std::vector<std::string>& overrides,
                                                  const std::vector<std::string>& adapters,
                                                  bool split_notes, std::ostream& notes) {
  std::set<std::string> given;  // keys the command line sets
  for (const std::string& o : overrides) given.insert(SplitOverride(o).first);
  std::vector<std::pair<std::string, LaunchConfig>> stored;  // adapter, its configuration
  for (const std::string& adapter : adapters) {
    absl::StatusOr<std::string> text = StoredConfigText(adapter);
    // With --config, the command itself names a missing or damaged file, after the
    // configuration's own errors.
    if (!text.ok() && !config_path.empty()) continue;
    MOA_RETURN_IF_ERROR(text.status());
    if (text->empty()) continue;
    absl::StatusOr<LaunchConfig> loaded =
        LoadLaunchConfigText(*text, "the configuration stored in " + adapter, {});
    if (loaded.ok()) {
      stored.emplace_back(adapter, *std::move(loaded));
    } else if (!config_path.empty() || adapter != adapters[0]) {
      // A checkpoint of an older moa whose keys have changed since.
      notes << "note: " << loaded.status().message() << "; the model " << adapter
            << " was trained as is not compared with this one\n";
    }
  }
  LaunchConfig config;
  if (!config_path.empty()) {
    MOA_ASSIGN_OR_RETURN(config, LoadLaunchConfig(config_path, overrides));
  } else {
    if (adapters.empty()) return LoadLaunchConfig("", overrides);
    MOA_ASSIGN_OR_RETURN(const std::string text, StoredConfigText(adapters[0]));
    if (text.empty()) {
      return absl::InvalidArgumentError(
          adapters[0] +
          " stores no training configuration (moa_config); give the run's with --config");
    }
    if (stored.empty() || stored[0].first != adapters[0]) {
      const absl::Status problem =
          LoadLaunchConfigText(text, "the configuration stored in " + adapters[0], {}).status();
      return absl::InvalidArgumentError(std::string(problem.message()) +
                                        "; give the run's configuration with --config (its "
                                        "config.ini)");
    }
    // How the training run was laid out and threaded is not this command's: those keys start
    // from their defaults here (parallel.device = auto evaluates a GPU run's checkpoint on a
    // machine without one).
    const LaunchConfig defaults = DefaultConfig();
    std::vector<std::string> with_defaults;
    for (const Option& option : OptionTable()) {
      const bool machine_key = absl::StartsWith(option.name, "parallel.") ||
                               option.name == "train.threads" || option.name == "data.workers";
      if (machine_key && !given.count(option.name)) {
        with_defaults.push_back(option.name + "=" + option.print(defaults));
      }
    }
    with_defaults.insert(with_defaults.end(), overrides.begin(), overrides.end());
    MOA_ASSIGN_OR_RETURN(
        config,
        LoadLaunchConfigText(text, "the configuration stored in " + adapters[0], with_defaults));
  }
  for (const auto& [adapter, trained] : stored) {
    std::vector<std::string> differences;
    for (const std::string& key : ModelKeys(trained)) {
      if (given.count(key)) continue;
      const std::string was = Value(trained, key), now = Value(config, key);
      if (was != now) differences.push_back(key + " = " + was + " there, " + now + " here");
    }
    const std::string was_backbone = Value(trained, "model.backbone");
    const std::string backbone = Value(config, "model.backbone");
    const bool backbone_used = trained.run.adapter.method != "full";
    if (backbone_used && !given.count("model.backbone") &&
        RandomBackbone(trained) != RandomBackbone(config)) {
      differences.push_back("model.backbone = " + was_backbone + " there, " + backbone + " here");
    }
    if (!differences.empty()) {
      const std::string what = config_path.empty()
                                   ? adapters[0] + " (the ensemble's first checkpoint)"
                                   : config_path + " describes";
      return absl::InvalidArgumentError(
          adapter + " was trained as another model than " + what + ": " +
          absl::StrJoin(differences, "; ") +
          (config_path.empty()
               ? "; the checkpoints of an ensemble must be trained as one model"
               : "; leave out --config to use the checkpoint's own configuration, or set a key "
                 "on the command line (--section.key=value) to change it on purpose"));
    }
    if (backbone_used && !RandomBackbone(config) && was_backbone != backbone) {
      notes << "note: " << adapter << " was trained on the backbone " << was_backbone
            << "; this uses " << backbone << "\n";
    }
    const std::string dataset = Value(config, "data.dataset");
    if (Value(trained, "data.dataset") != dataset) {
      notes << "note: " << adapter << " was trained on " << Value(trained, "data.dataset")
            << "; this uses " << dataset << " (its classes, in its order)\n";
      continue;
    }
    std::vector<std::string> split_differences;
    for (const std::string& key : SplitKeys(dataset)) {
      const std::string was = Value(trained, key), now = Value(config, key);
      if (was != now) split_differences.push_back(key + " " + was + " -> " + now);
    }
    if (!split_differences.empty() && split_notes) {
      notes << "note: " << adapter << " was trained on other in/out splits of " << dataset << " ("
            << absl::StrJoin(split_differences, ", ")
            << "): the `out` accuracies include images it trained on\n";
    }
  }
  return config;
}

}  // namespace moa::launch
