// Loading a configuration (docs/architecture.md, Configuration): defaults (the structs' own
// values), then an INI file, then `--section.key=value` overrides, then the cross-key rules.
// Unknown keys, wrong types and out-of-range values are errors naming the key and where the value
// came from. The keys themselves are declared in option_table.cc.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>

#include "trainer/config.h"

namespace moa::launch {

/// How `moa sweep --launcher slurm` asks Slurm for resources (the [slurm] section); training
/// never reads it.
struct SlurmConfig {
  std::string partition;  // empty: the cluster's default
  std::string account;    // empty: the user's default
  int64_t nodes = 1;
  int64_t ntasks_per_node = 1;
  int64_t gpus_per_task = 0;  // 0: ask for none
  int64_t cpus_per_task = 0;  // 0: the partition's default
  std::string time;           // sbatch --time; empty: the partition's default
  std::string mpi = "pmix";   // srun --mpi plugin
  int64_t max_running = 0;    // 0: no limit
  std::string job_name = "moa-sweep";
  /// sbatch --signal: the warning Slurm sends the tasks before the time limit (empty: none).
  std::string signal = "USR1@180";
};

/// Everything a configuration file holds: the run's sections and [slurm].
struct LaunchConfig {
  trainer::RunConfig run;
  SlurmConfig slurm;
};

/// The configuration with every default and no file (its resolved_ini filled in).
LaunchConfig DefaultConfig();

/// Reads `config_path` (may be empty: defaults only), then applies `overrides` of the form
/// `--section.key=value` (or `section.key=value`), then checks every value and the cross-key
/// rules (test envs exist, batch size divides among dp ranks, ...).
absl::StatusOr<LaunchConfig> LoadLaunchConfig(const std::string& config_path,
                                              const std::vector<std::string>& overrides);

/// LoadLaunchConfig on INI text held in memory (a checkpoint's stored configuration); `origin`
/// names it in errors ("the configuration stored in FILE").
absl::StatusOr<LaunchConfig> LoadLaunchConfigText(const std::string& text,
                                                  const std::string& origin,
                                                  const std::vector<std::string>& overrides);

/// LoadLaunchConfig's run sections, for what trains or evaluates.
absl::StatusOr<trainer::RunConfig> LoadConfig(const std::string& config_path,
                                              const std::vector<std::string>& overrides);

/// "--section.key=value" or "section.key=value" -> (key, value); no '=': (key, "").
std::pair<std::string, std::string> SplitOverride(const std::string& text);

/// Help text: every option with its default and help line, grouped by section.
std::string OptionsHelp();

/// The resolved configuration as INI text, [slurm] included.
std::string ToIni(const LaunchConfig& config);

}  // namespace moa::launch
