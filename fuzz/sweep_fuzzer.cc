// libFuzzer target: what `moa sweep` reads to plan its jobs (launch/sweep.h, sweep_jobs.h): its
// command line (one word a line, the sweep command first), the test-environment sets of
// --data.test_envs, and, for a small plan on built-in datasets without a configuration file,
// the job list itself with every job's configuration checked.
#include <algorithm>
#include <cstdint>

#include "data/dataset.h"
#include "fuzz/fuzz_input.h"
#include "launch/sweep.h"

namespace {

// The plans MakeSweepJobs may make here: at most this many jobs, on datasets whose
// environments are known without reading a folder (ImageFolder scans data.data_dir).
constexpr int64_t kMostJobs = 16;

bool SmallBuiltInPlan(const moa::launch::SweepOptions& options) {
  if (!options.config.empty()) return false;
  std::vector<std::string> datasets = options.datasets;
  if (datasets.empty()) datasets.push_back(moa::launch::DefaultConfig().run.data.dataset);
  int64_t most_sets = 0;
  for (const std::string& dataset : datasets) {
    const auto info = moa::data::LookupDataset(dataset);
    if (!info.ok() || info->environments.empty()) return false;
    const auto sets = moa::launch::TestEnvSets(options.test_envs,
                                               static_cast<int64_t>(info->environments.size()));
    if (sets.ok()) most_sets = std::max(most_sets, static_cast<int64_t>(sets->size()));
  }
  int64_t jobs = 1;
  for (const int64_t factor : {options.n_trials, static_cast<int64_t>(datasets.size()),
                               static_cast<int64_t>(options.methods.size()),
                               options.n_hparams - options.n_hparams_from, most_sets}) {
    if (factor > kMostJobs) return false;
    jobs *= factor < 1 ? 1 : factor;
    if (jobs > kMostJobs) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> words = moa::fuzz::SplitLines(moa::fuzz::InputText(data, size));
  const auto options = moa::launch::ParseSweepArgs(words, moa::fuzz::NullStream());
  if (!options.ok()) return 0;
  for (int64_t n_envs = 1; n_envs <= 6; ++n_envs) {
    (void)moa::launch::TestEnvSets(options->test_envs, n_envs);
  }
  if (SmallBuiltInPlan(*options)) (void)moa::launch::MakeSweepJobs(*options);
  return 0;
}
