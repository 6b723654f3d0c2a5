#include "launch/sweep_jobs.h"

#include <absl/strings/match.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>
#include <absl/strings/strip.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/hash.h"
#include "common/status_macros.h"
#include "data/dataset.h"
#include "launch/hparams.h"

namespace moa::launch {
namespace {

namespace fs = std::filesystem;

// DomainBed's run seed: seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed), the
// md5 of the tuple's Python repr modulo 2^31.
int64_t RunSeed(const SweepJob& job) {
  const std::string repr =
      "('" + job.dataset + "', '" + job.method + "', [" + absl::StrJoin(job.test_envs, ", ") +
      "], " + std::to_string(job.hparams_seed) + ", " + std::to_string(job.trial_seed) + ")";
  return static_cast<int64_t>(Md5Mod2To31(repr));
}

// "the 2 ranks of each job (--launcher mpirun --np 2)", for messages.
std::string JobWorldText(const SweepOptions& options, const SlurmConfig& slurm) {
  const int64_t world = JobWorldSize(options, slurm);
  std::string how = "--launcher " + options.launcher;
  if (options.launcher == "mpirun") how += " --np " + std::to_string(options.np);
  if (options.launcher == "slurm") {
    how += ": slurm.nodes = " + std::to_string(slurm.nodes) +
           " x slurm.ntasks_per_node = " + std::to_string(slurm.ntasks_per_node);
  }
  return (world == 1 ? std::string("the 1 rank") : "the " + std::to_string(world) + " ranks") +
         " of each job (" + how + ")";
}

// The parallel layout of the sweep's base configuration against the launcher's world: the world
// is parallel.dp x parallel.ep, with dp = 0 standing for world / ep.
absl::Status CheckLayoutFitsWorld(const trainer::RunConfig& base, const SweepOptions& options,
                                  const SlurmConfig& slurm) {
  const int64_t world = JobWorldSize(options, slurm);
  const int64_t dp = base.parallel.dp, ep = base.parallel.ep;
  if (dp > 0 && dp * ep != world) {
    return absl::InvalidArgumentError(
        "parallel.dp x parallel.ep = " + std::to_string(dp) + " x " + std::to_string(ep) + " = " +
        std::to_string(dp * ep) + " ranks, but the launcher gives " + JobWorldText(options, slurm) +
        "; make them agree, or set parallel.dp = 0 (the world size / parallel.ep)");
  }
  if (world % ep != 0) {
    return absl::InvalidArgumentError("parallel.ep = " + std::to_string(ep) + " does not divide " +
                                      JobWorldText(options, slurm));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t JobWorldSize(const SweepOptions& options, const SlurmConfig& slurm) {
  if (options.launcher == "mpirun") return options.np;
  if (options.launcher == "slurm") return slurm.nodes * slurm.ntasks_per_node;
  return 1;
}

std::string SweepJob::Describe() const {
  return dataset + " " + method + " test_envs=" + absl::StrJoin(test_envs, ",") +
         " hparams_seed=" + std::to_string(hparams_seed) +
         " trial_seed=" + std::to_string(trial_seed);
}

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kDone:
      return "done";
    case JobState::kIncomplete:
      return "incomplete";
    case JobState::kNotLaunched:
      break;
  }
  return "not launched";
}

absl::StatusOr<LaunchConfig> LoadSweepBase(const SweepOptions& options) {
  auto config = LoadLaunchConfig(options.config, options.overrides);
  if (!config.ok()) {
    return absl::InvalidArgumentError("the base configuration: " +
                                      std::string(config.status().message()));
  }
  return config;
}

absl::StatusOr<std::vector<std::vector<int64_t>>> TestEnvSets(const std::string& spec,
                                                              int64_t n_envs) {
  std::vector<std::vector<int64_t>> sets;
  if (spec == "single" || spec == "pairs") {
    for (int64_t i = 0; i < n_envs; ++i) {
      sets.push_back({i});
      if (spec == "single") continue;
      for (int64_t j = i + 1; j < n_envs; ++j) sets.push_back({i, j});
    }
    return sets;
  }
  for (absl::string_view set_text : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::vector<int64_t> set;
    for (absl::string_view env_text : absl::StrSplit(set_text, '+')) {
      int64_t env;
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(env_text), &env)) {
        return absl::InvalidArgumentError("--data.test_envs " + spec +
                                          ": expected single, pairs, or sets of environment "
                                          "indices such as 0,5 or 0,0+1; '" +
                                          std::string(set_text) + "' is not one");
      }
      if (env < 0 || env >= n_envs) {
        return absl::InvalidArgumentError("--data.test_envs " + spec + ": environment " +
                                          std::to_string(env) + " does not exist (0 to " +
                                          std::to_string(n_envs - 1) + ")");
      }
      if (std::find(set.begin(), set.end(), env) != set.end()) {
        return absl::InvalidArgumentError("--data.test_envs " + spec + ": '" +
                                          std::string(set_text) + "' names environment " +
                                          std::to_string(env) + " twice");
      }
      set.push_back(env);
    }
    std::sort(set.begin(), set.end());
    sets.push_back(set);
  }
  if (sets.empty()) return absl::InvalidArgumentError("--data.test_envs is empty");
  return sets;
}

absl::StatusOr<std::vector<SweepJob>> MakeSweepJobs(const SweepOptions& options) {
  MOA_ASSIGN_OR_RETURN(const LaunchConfig base_config, LoadSweepBase(options));
  const trainer::RunConfig& base = base_config.run;
  MOA_RETURN_IF_ERROR(CheckLayoutFitsWorld(base, options, base_config.slurm));
  const int64_t world = JobWorldSize(options, base_config.slurm);
  const std::vector<std::string> datasets =
      options.datasets.empty() ? std::vector<std::string>{base.data.dataset} : options.datasets;
  const std::vector<std::string> methods =
      options.methods.empty() ? std::vector<std::string>{base.adapter.method} : options.methods;
  // The user's overrides, keyed; [slurm] and the dataset/method (set per job) stay out of the
  // jobs' arguments.
  std::map<std::string, std::string> user;
  for (const std::string& o : options.overrides)
    user[SplitOverride(o).first] = SplitOverride(o).second;
  std::set<std::string> pinned;
  for (const auto& [key, value] : user) pinned.insert(key);

  std::vector<SweepJob> jobs;
  for (int64_t trial = 0; trial < options.n_trials; ++trial) {
    for (const std::string& dataset : datasets) {
      // ImageFolder's environments come from a scan of data.data_dir, as training finds them.
      auto info = data::DescribeDataset(dataset, base.data.data_dir);
      if (!info.ok())
        return absl::InvalidArgumentError("--data.dataset " + dataset + ": " +
                                          std::string(info.status().message()));
      MOA_ASSIGN_OR_RETURN(
          const auto env_sets,
          TestEnvSets(options.test_envs, static_cast<int64_t>(info->environments.size())));
      for (const std::string& method : methods) {
        trainer::RunConfig method_base = base;
        method_base.adapter.method = method;
        for (const std::vector<int64_t>& envs : env_sets) {
          for (int64_t h = options.n_hparams_from; h < options.n_hparams; ++h) {
            SweepJob job;
            job.dataset = dataset;
            job.method = method;
            job.test_envs = envs;
            job.hparams_seed = h;
            job.trial_seed = trial;
            std::map<std::string, std::string> args;
            for (const auto& [key, value] : user) {
              if (!absl::StartsWith(key, "slurm.")) args[key] = value;
            }
            args["data.dataset"] = dataset;
            args["adapter.method"] = method;
            args["data.test_envs"] = absl::StrJoin(envs, ",");
            args["train.hparams_seed"] = std::to_string(h);
            args["train.trial_seed"] = std::to_string(trial);
            args["train.seed"] = std::to_string(RunSeed(job));
            for (const auto& [key, value] : DrawHparams(method_base, world, h, trial, pinned)) {
              args[key] = value;
            }
            nlohmann::json identity;
            identity["config"] = options.config;
            identity["options"] = args;
            job.id = Md5Hex(identity.dump());
            job.dir = options.output_dir + "/" + job.id;
            if (!options.config.empty()) {
              job.train_args = {"--config", options.config};
            }
            std::vector<std::string> overrides;
            for (const auto& [key, value] : args) overrides.push_back("--" + key + "=" + value);
            job.train_args.insert(job.train_args.end(), overrides.begin(), overrides.end());
            job.train_args.push_back("--output.dir=" + job.dir);
            auto checked = LoadConfig(options.config, overrides);
            if (!checked.ok()) {
              return absl::InvalidArgumentError("job " + job.Describe() + ": " +
                                                std::string(checked.status().message()));
            }
            if (checked->data.batch_size % world != 0) {
              return absl::InvalidArgumentError(
                  "job " + job.Describe() +
                  ": data.batch_size = " + std::to_string(checked->data.batch_size) +
                  " does not divide among " + JobWorldText(options, base_config.slurm));
            }
            jobs.push_back(std::move(job));
          }
        }
      }
    }
  }
  return jobs;
}

const std::set<std::string>& SweepDirectoryFiles() {
  static const std::set<std::string> files = {"slurm", "results.txt", "results.md", "results.tex",
                                              "moa-sweep.lock"};
  return files;
}

JobState StateOf(const SweepJob& job) {
  if (fs::exists(job.dir + "/done")) return JobState::kDone;
  if (fs::exists(job.dir)) return JobState::kIncomplete;
  return JobState::kNotLaunched;
}

std::vector<std::string> RunArgs(const SweepJob& job) {
  if (fs::exists(job.dir + "/checkpoints/state.safetensors")) {
    return {"train", "--resume", job.dir};
  }
  std::vector<std::string> args = {"train"};
  args.insert(args.end(), job.train_args.begin(), job.train_args.end());
  return args;
}

}  // namespace moa::launch
