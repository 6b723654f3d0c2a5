#include "launch/checkpoint_config.h"

#include <absl/strings/match.h>
#include <absl/strings/str_join.h>

#include <map>
#include <set>

#include "common/safetensors.h"
#include "common/status_macros.h"
#include "launch/option_table.h"
#include "trainer/build.h"

namespace moa::launch {
namespace {

// Keys that decide each domain's in/out split (and, for the rotated datasets, its images).
const char* const kSplitKeys[] = {"data.source", "data.holdout_fraction", "data.max_per_domain",
                                  "train.trial_seed", "train.seed"};

std::string Value(const LaunchConfig& config, const std::string& key) {
  return FindOption(key)->print(config);
}

// The configuration stored in `adapter`, or an empty text when it stores none.
absl::StatusOr<std::string> StoredConfigText(const std::string& adapter) {
  MOA_ASSIGN_OR_RETURN(const auto metadata, ReadSafetensorsMetadata(adapter));
  const auto found = metadata.find("moa_config");
  return found == metadata.end() ? std::string() : found->second;
}

}  // namespace

std::vector<std::string> ModelKeys(const LaunchConfig& config) {
  static const std::set<std::string> kMoaKeys = {"moa.expert", "moa.ranks",    "moa.top_k",
                                                 "moa.router", "moa.proj_dim", "moa.renormalize",
                                                 "moa.phm_dim"};
  std::vector<std::string> keys;
  for (const Option& option : OptionTable()) {
    if (absl::StartsWith(option.name, "model.") || absl::StartsWith(option.name, "adapter.") ||
        kMoaKeys.count(option.name)) {
      keys.push_back(option.name);
    }
  }
  if (config.run.model.backbone == trainer::kRandomBackbone) keys.push_back("train.seed");
  return keys;
}

absl::StatusOr<LaunchConfig> ConfigForCheckpoints(const std::string& config_path,
                                                  const std::vector<std::string>& overrides,
                                                  const std::vector<std::string>& adapters,
                                                  std::ostream& notes) {
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
    } else if (!config_path.empty()) {
      // A checkpoint of an older moa whose keys have changed since: --config decides.
      notes << "note: " << loaded.status().message() << "; the model " << adapter
            << " was trained as is not compared with " << config_path << "'s\n";
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
    if (!differences.empty()) {
      return absl::InvalidArgumentError(
          adapter + " was trained as another model than " +
          (config_path.empty() ? std::string("the first checkpoint's") : config_path) +
          " describes (" + absl::StrJoin(differences, "; ") +
          "): leave out --config to use the checkpoint's own configuration, or set a key on the "
          "command line (--section.key=value) to change it on purpose");
    }
    if (Value(trained, "data.dataset") != Value(config, "data.dataset")) continue;
    std::vector<std::string> split_differences;
    for (const char* key : kSplitKeys) {
      const std::string was = Value(trained, key), now = Value(config, key);
      if (was != now) split_differences.push_back(std::string(key) + " " + was + " -> " + now);
    }
    if (!split_differences.empty()) {
      notes << "note: " << adapter << " was trained on other in/out splits of "
            << Value(config, "data.dataset") << " (" << absl::StrJoin(split_differences, ", ")
            << "): the `out` accuracies below include images it trained on\n";
    }
  }
  return config;
}

}  // namespace moa::launch
