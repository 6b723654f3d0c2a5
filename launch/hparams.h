// The hyper-parameter search space of `moa sweep` and `moa train --train.hparams_seed`,
// DomainBed-style: draw 0 keeps the base configuration's values; draw h > 0 takes each swept
// option at random from its range, seeded by DomainBed's seed_hash(h, trial_seed) and the option's
// own name, so a draw is reproducible and adding an option to the registry leaves the other
// options' draws unchanged.
//
//   for (const auto& [key, value] :
//        DrawHparams(base, /*world_size=*/2, /*hparams_seed=*/3, /*trial_seed=*/0, {}))
//     overrides.push_back("--" + key + "=" + value);
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>

#include "launch/options.h"
#include "trainer/config.h"

namespace moa::launch {

/// One swept option: its key, the adapter methods it applies to (empty: every method), the
/// range in words (for help) and how a uniform number in [0, 1) becomes its value, given the base
/// configuration and the number of ranks the job runs on.
struct HparamRange {
  std::string key;
  std::vector<std::string> methods;
  std::string range;
  std::function<std::string(double uniform, const trainer::RunConfig& base, int64_t world_size)>
      draw;
};

/// The registry, in a fixed order.
const std::vector<HparamRange>& HparamRegistry();

/// The uniform number in [0, 1) of one option in one draw.
double HparamUniform(int64_t hparams_seed, int64_t trial_seed, const std::string& key);

/// The overrides (key, value) of draw `hparams_seed` for the base configuration's method, for a
/// job of `world_size` ranks (drawn batch sizes are multiples of it; with 1 they are DomainBed's);
/// empty for draw 0. Keys in `pinned` (set by the user) are left out.
std::vector<std::pair<std::string, std::string>> DrawHparams(const trainer::RunConfig& base,
                                                             int64_t world_size,
                                                             int64_t hparams_seed,
                                                             int64_t trial_seed,
                                                             const std::set<std::string>& pinned);

/// `moa train`'s configuration: LoadLaunchConfig(config_path, overrides) and, where its
/// train.hparams_seed is above 0 and it resumes nothing, draw train.hparams_seed (trial
/// train.trial_seed) applied to every registered key that `overrides` leave unset, as
/// `python -m domainbed.scripts.train --hparams_seed` draws (a sweep's job gets the same values:
/// it carries its draw as overrides, so drawing again changes nothing). `world_size`: the ranks
/// launched. What was drawn goes into `drawn` when given.
absl::StatusOr<LaunchConfig> LoadConfigWithDraw(
    const std::string& config_path, const std::vector<std::string>& overrides, int64_t world_size,
    std::vector<std::pair<std::string, std::string>>* drawn = nullptr);

/// The registry as help text: one line per option with its methods and range.
std::string HparamRegistryHelp();

}  // namespace moa::launch
