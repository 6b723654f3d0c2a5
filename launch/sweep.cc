#include "launch/sweep.h"

#include <absl/strings/match.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>
#include <absl/strings/strip.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/files.h"
#include "common/hash.h"
#include "common/status_macros.h"
#include "data/dataset.h"
#include "launch/hparams.h"
#include "launch/launchers.h"
#include "launch/options.h"

namespace moa::launch {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSweepUsage =
    "usage: moa sweep launch|list|delete_incomplete --config FILE --output_dir DIR [flags]\n"
    "                 [--section.key=value ...]\n"
    "\n"
    "  launch             run every job that is not done (incomplete ones resume from their\n"
    "                     last checkpoint); a finished sweep runs nothing\n"
    "  list               print every job with its state (done, incomplete, not launched)\n"
    "  delete_incomplete  remove the run directories of this sweep's incomplete jobs, nothing\n"
    "                     else (cancel running jobs first)\n"
    "\n"
    "flags:\n"
    "  --config FILE        base configuration (every job starts from it)\n"
    "  --output_dir DIR     the sweep directory: one run directory per job, named by its id\n"
    "  --datasets A [B ..]  datasets (default: the configuration's data.dataset)\n"
    "  --methods A [B ..]   adapter methods (default: the configuration's adapter.method)\n"
    "  --test_envs SPEC     single, pairs (singles and pairs, DomainBed's default, needed by\n"
    "                       leave-one-domain-out), or a list of sets such as 0,5 or 0,0+1\n"
    "  --n_hparams N        hyper-parameter draws 0..N-1 (default 20; draw 0: the defaults)\n"
    "  --n_hparams_from N   first draw (default 0)\n"
    "  --n_trials N         trials (trial_seed 0..N-1, default 3)\n"
    "  --launcher L         local, mpirun or slurm (default local)\n"
    "  --max_parallel N     local and mpirun: jobs running at once (default 1)\n"
    "  --np N               mpirun: ranks per job (default 2)\n"
    "  --mpirun CMD         mpirun: the command with its flags (default mpirun)\n"
    "  --moa PATH           the moa executable jobs run (default: this one)\n"
    "  --dry_run            slurm: write the sbatch script, do not submit it\n"
    "  --slurm.KEY=VALUE    Slurm resources (partition, account, nodes, ntasks_per_node,\n"
    "                       gpus_per_task, cpus_per_task, time, mpi, max_running, job_name);\n"
    "                       also read from the configuration's [slurm] section\n"
    "\n"
    "Other --section.key=value options go to every job. A swept key given this way is pinned.\n"
    "Swept hyper-parameters (draws h > 0):\n";

// Keys the sweep sets itself.
const std::set<std::string>& SweepOwnedKeys() {
  static const std::set<std::string> keys = {"output.dir",       "train.resume",
                                             "data.test_envs",   "train.hparams_seed",
                                             "train.trial_seed", "train.seed"};
  return keys;
}

// DomainBed's run seed: seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed), the
// md5 of the tuple's Python repr modulo 2^31.
int64_t RunSeed(const SweepJob& job) {
  const std::string repr =
      "('" + job.dataset + "', '" + job.method + "', [" + absl::StrJoin(job.test_envs, ", ") +
      "], " + std::to_string(job.hparams_seed) + ", " + std::to_string(job.trial_seed) + ")";
  return static_cast<int64_t>(Md5Mod2To31(repr));
}

// "--section.key=value" or "section.key=value" -> (key, value).
std::pair<std::string, std::string> SplitOverride(const std::string& text) {
  std::string body = absl::StartsWith(text, "--") ? text.substr(2) : text;
  const size_t eq = body.find('=');
  if (eq == std::string::npos) return {body, ""};
  return {body.substr(0, eq), body.substr(eq + 1)};
}

absl::StatusOr<int64_t> ParseCount(const std::string& flag, const std::string& text,
                                   int64_t minimum) {
  int64_t value;
  if (!absl::SimpleAtoi(text, &value) || value < minimum) {
    return absl::InvalidArgumentError(flag + " needs an integer of at least " +
                                      std::to_string(minimum) + ", got '" + text + "'");
  }
  return value;
}

std::string Absolute(const std::string& path) {
  return path.empty() ? path : fs::absolute(path).lexically_normal().string();
}

std::string ThisExecutable() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("moa") : self.string();
}

// The configuration every job starts from: the file and the user's overrides.
absl::StatusOr<trainer::RunConfig> BaseConfig(const SweepOptions& options) {
  auto config = LoadConfig(options.config, options.overrides);
  if (!config.ok()) {
    return absl::InvalidArgumentError("the base configuration: " +
                                      std::string(config.status().message()));
  }
  return config;
}

absl::Status WriteJobFile(const SweepJob& job) {
  nlohmann::ordered_json description;
  description["id"] = job.id;
  description["dataset"] = job.dataset;
  description["method"] = job.method;
  description["test_envs"] = job.test_envs;
  description["hparams_seed"] = job.hparams_seed;
  description["trial_seed"] = job.trial_seed;
  description["train_args"] = job.train_args;
  MOA_RETURN_IF_ERROR(MakeDirs(job.dir));
  return WriteFileAtomically(job.dir + "/job.json", description.dump(2) + "\n");
}

// Entries of the sweep directory that are not run directories of these jobs (besides the files
// moa itself writes there).
std::vector<std::string> ForeignEntries(const std::string& output_dir,
                                        const std::vector<SweepJob>& jobs) {
  std::set<std::string> ids;
  for (const SweepJob& job : jobs) ids.insert(job.id);
  static const std::set<std::string> ours = {"slurm", "results.txt", "results.md", "results.tex"};
  std::vector<std::string> foreign;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!ids.count(name) && !ours.count(name)) foreign.push_back(name);
  }
  std::sort(foreign.begin(), foreign.end());
  return foreign;
}

void ReportForeign(const std::string& output_dir, const std::vector<SweepJob>& jobs) {
  const std::vector<std::string> foreign = ForeignEntries(output_dir, jobs);
  if (foreign.empty()) return;
  std::vector<std::string> shown(foreign.begin(),
                                 foreign.begin() + std::min<size_t>(5, foreign.size()));
  std::cerr << "moa sweep: note: " << foreign.size() << " entr"
            << (foreign.size() == 1 ? "y" : "ies") << " of " << output_dir
            << " belong to no job of this sweep and are left alone (" << absl::StrJoin(shown, ", ")
            << (foreign.size() > shown.size() ? ", ..." : "") << ")\n";
}

struct StateCounts {
  int done = 0, incomplete = 0, not_launched = 0;
};

StateCounts CountStates(const std::vector<SweepJob>& jobs) {
  StateCounts counts;
  for (const SweepJob& job : jobs) {
    switch (StateOf(job)) {
      case JobState::kDone:
        ++counts.done;
        break;
      case JobState::kIncomplete:
        ++counts.incomplete;
        break;
      case JobState::kNotLaunched:
        ++counts.not_launched;
        break;
    }
  }
  return counts;
}

void PrintCounts(const std::vector<SweepJob>& jobs) {
  const StateCounts c = CountStates(jobs);
  std::printf("moa sweep: %zu jobs: %d done, %d incomplete, %d not launched\n", jobs.size(), c.done,
              c.incomplete, c.not_launched);
}

int Launch(const SweepOptions& options, const std::vector<SweepJob>& jobs) {
  PrintCounts(jobs);
  ReportForeign(options.output_dir, jobs);
  std::vector<SweepJob> pending;
  int incomplete = 0, queued = 0;
  for (const SweepJob& job : jobs) {
    const JobState state = StateOf(job);
    if (state == JobState::kDone) continue;
    if (state == JobState::kIncomplete) {
      const std::string task = QueuedSlurmTask(job.dir);
      if (!task.empty()) {
        std::printf("moa sweep: %s is still queued or running as Slurm job %s; not relaunched\n",
                    job.id.c_str(), task.c_str());
        ++queued;
        continue;
      }
      ++incomplete;
    }
    pending.push_back(job);
  }
  if (pending.empty()) {
    std::printf("moa sweep: nothing to launch: every job is %s\n",
                queued > 0 ? "done or queued in Slurm" : "done");
    return 0;
  }
  if (incomplete > 0) {
    std::printf(
        "moa sweep: relaunching %d incomplete job%s: each resumes from its last checkpoint if it "
        "has one (if one is still running elsewhere, stop it first)\n",
        incomplete, incomplete == 1 ? "" : "s");
  }
  for (const SweepJob& job : pending) {
    const absl::Status status = WriteJobFile(job);
    if (!status.ok()) {
      std::cerr << "moa sweep: " << status.message() << "\n";
      return 1;
    }
  }
  if (options.launcher == "slurm") {
    auto base = BaseConfig(options);
    if (!base.ok()) {
      std::cerr << "moa sweep: " << base.status().message() << "\n";
      return 2;
    }
    auto script = LaunchOnSlurm(pending, options, base->slurm);
    if (!script.ok()) {
      std::cerr << "moa sweep: " << script.status().message() << "\n";
      return 1;
    }
    return 0;
  }
  const int failed = RunJobsAsProcesses(pending, options);
  std::printf("moa sweep: %zu job%s ran, %d failed\n", pending.size(),
              pending.size() == 1 ? "" : "s", failed);
  return failed == 0 ? 0 : 1;
}

int List(const std::vector<SweepJob>& jobs) {
  for (const SweepJob& job : jobs) {
    std::printf("%-12s  %s  %s\n", JobStateName(StateOf(job)), job.id.c_str(),
                job.Describe().c_str());
  }
  PrintCounts(jobs);
  return 0;
}

int DeleteIncomplete(const SweepOptions& options, const std::vector<SweepJob>& jobs) {
  int deleted = 0;
  for (const SweepJob& job : jobs) {
    if (StateOf(job) != JobState::kIncomplete) continue;
    if (!fs::exists(job.dir + "/job.json")) {
      std::cerr << "moa sweep: " << job.dir
                << " has no job.json (moa sweep did not create it); left alone\n";
      continue;
    }
    std::error_code ec;
    fs::remove_all(job.dir, ec);
    if (ec) {
      std::cerr << "moa sweep: cannot remove " << job.dir << ": " << ec.message() << "\n";
      return 1;
    }
    std::printf("deleted %s  %s\n", job.id.c_str(), job.Describe().c_str());
    ++deleted;
  }
  std::printf("moa sweep: deleted %d incomplete job%s\n", deleted, deleted == 1 ? "" : "s");
  ReportForeign(options.output_dir, jobs);
  return 0;
}

}  // namespace

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

absl::StatusOr<SweepOptions> ParseSweepArgs(const std::vector<std::string>& args) {
  SweepOptions options;
  if (args.empty()) return absl::InvalidArgumentError("missing the sweep command");
  options.command = args[0];
  if (options.command != "launch" && options.command != "list" &&
      options.command != "delete_incomplete") {
    return absl::InvalidArgumentError("unknown sweep command '" + options.command +
                                      "' (launch, list or delete_incomplete)");
  }
  for (size_t i = 1; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool has_value = false;
    const size_t eq = flag.find('=');
    if (absl::StartsWith(flag, "--") && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    // The next word as this flag's value.
    auto take = [&]() -> absl::StatusOr<std::string> {
      if (has_value) return value;
      if (i + 1 >= args.size() || absl::StartsWith(args[i + 1], "--")) {
        return absl::InvalidArgumentError(flag + " needs a value");
      }
      return args[++i];
    };
    // The following words up to the next flag, commas also separating.
    auto take_list = [&]() -> absl::StatusOr<std::vector<std::string>> {
      std::vector<std::string> words;
      if (has_value) words.push_back(value);
      while (!has_value && i + 1 < args.size() && !absl::StartsWith(args[i + 1], "--")) {
        words.push_back(args[++i]);
      }
      std::vector<std::string> items;
      for (const std::string& w : words) {
        for (absl::string_view part : absl::StrSplit(w, ',', absl::SkipWhitespace())) {
          items.emplace_back(absl::StripAsciiWhitespace(part));
        }
      }
      if (items.empty()) return absl::InvalidArgumentError(flag + " needs at least one name");
      return items;
    };
    if (flag == "--config") {
      MOA_ASSIGN_OR_RETURN(options.config, take());
    } else if (flag == "--output_dir") {
      MOA_ASSIGN_OR_RETURN(options.output_dir, take());
    } else if (flag == "--datasets") {
      MOA_ASSIGN_OR_RETURN(options.datasets, take_list());
    } else if (flag == "--methods") {
      MOA_ASSIGN_OR_RETURN(options.methods, take_list());
    } else if (flag == "--test_envs") {
      MOA_ASSIGN_OR_RETURN(options.test_envs, take());
    } else if (flag == "--launcher") {
      MOA_ASSIGN_OR_RETURN(options.launcher, take());
      if (options.launcher != "local" && options.launcher != "mpirun" &&
          options.launcher != "slurm") {
        return absl::InvalidArgumentError("--launcher must be local, mpirun or slurm, got '" +
                                          options.launcher + "'");
      }
    } else if (flag == "--mpirun") {
      MOA_ASSIGN_OR_RETURN(options.mpirun, take());
    } else if (flag == "--moa") {
      MOA_ASSIGN_OR_RETURN(options.moa, take());
    } else if (flag == "--dry_run") {
      options.dry_run = true;
    } else if (flag == "--n_hparams" || flag == "--n_hparams_from" || flag == "--n_trials" ||
               flag == "--max_parallel" || flag == "--np") {
      MOA_ASSIGN_OR_RETURN(const std::string text, take());
      const int64_t minimum = flag == "--n_hparams_from" ? 0 : 1;
      MOA_ASSIGN_OR_RETURN(const int64_t count, ParseCount(flag, text, minimum));
      if (flag == "--n_hparams") options.n_hparams = count;
      if (flag == "--n_hparams_from") options.n_hparams_from = count;
      if (flag == "--n_trials") options.n_trials = count;
      if (flag == "--max_parallel") options.max_parallel = count;
      if (flag == "--np") options.np = count;
    } else if (absl::StartsWith(flag, "--") && flag.find('.') != std::string::npos) {
      MOA_ASSIGN_OR_RETURN(const std::string text, take());
      const std::string key = flag.substr(2);
      if (SweepOwnedKeys().count(key)) {
        return absl::InvalidArgumentError(
            "--" + key +
            " is set by moa sweep for each job (use --test_envs, --n_hparams, --n_trials and "
            "--output_dir)");
      }
      options.overrides.push_back(flag + "=" + text);
    } else {
      return absl::InvalidArgumentError("unexpected argument '" + args[i] +
                                        "' (see moa sweep --help)");
    }
  }
  if (options.output_dir.empty()) return absl::InvalidArgumentError("--output_dir is required");
  if (options.n_hparams_from >= options.n_hparams) {
    return absl::InvalidArgumentError("--n_hparams_from " + std::to_string(options.n_hparams_from) +
                                      " leaves no draw below --n_hparams " +
                                      std::to_string(options.n_hparams));
  }
  if (!options.config.empty() && !fs::is_regular_file(options.config)) {
    return absl::NotFoundError("--config " + options.config + " is not a file");
  }
  options.config = Absolute(options.config);
  options.output_dir = Absolute(options.output_dir);
  options.moa = options.moa.empty() ? ThisExecutable() : Absolute(options.moa);
  return options;
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
        return absl::InvalidArgumentError("--test_envs " + spec +
                                          ": expected single, pairs, or sets of environment "
                                          "indices such as 0,5 or 0,0+1; '" +
                                          std::string(set_text) + "' is not one");
      }
      if (env < 0 || env >= n_envs) {
        return absl::InvalidArgumentError("--test_envs " + spec + ": environment " +
                                          std::to_string(env) + " does not exist (0 to " +
                                          std::to_string(n_envs - 1) + ")");
      }
      if (std::find(set.begin(), set.end(), env) != set.end()) {
        return absl::InvalidArgumentError("--test_envs " + spec + ": '" + std::string(set_text) +
                                          "' names environment " + std::to_string(env) + " twice");
      }
      set.push_back(env);
    }
    std::sort(set.begin(), set.end());
    sets.push_back(set);
  }
  if (sets.empty()) return absl::InvalidArgumentError("--test_envs is empty");
  return sets;
}

absl::StatusOr<std::vector<SweepJob>> MakeSweepJobs(const SweepOptions& options) {
  MOA_ASSIGN_OR_RETURN(const trainer::RunConfig base, BaseConfig(options));
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
        return absl::InvalidArgumentError("--datasets " + dataset + ": " +
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
            for (const auto& [key, value] : DrawHparams(method_base, h, trial, pinned)) {
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
            jobs.push_back(std::move(job));
          }
        }
      }
    }
  }
  return jobs;
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

int RunSweepCommand(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" ||
      std::find(args.begin(), args.end(), "--help") != args.end()) {
    std::printf("%s%s", kSweepUsage, HparamRegistryHelp().c_str());
    return args.empty() ? 2 : 0;
  }
  auto options = ParseSweepArgs(args);
  if (!options.ok()) {
    std::cerr << "moa sweep: " << options.status().message() << "\n";
    return 2;
  }
  auto jobs = MakeSweepJobs(*options);
  if (!jobs.ok()) {
    std::cerr << "moa sweep: " << jobs.status().message() << "\n";
    return 2;
  }
  if (options->command == "list") return List(*jobs);
  if (options->command == "delete_incomplete") return DeleteIncomplete(*options, *jobs);
  const absl::Status made = MakeDirs(options->output_dir);
  if (!made.ok()) {
    std::cerr << "moa sweep: " << made.message() << "\n";
    return 1;
  }
  return Launch(*options, *jobs);
}

}  // namespace moa::launch
