#include "launch/sweep.h"

#include <absl/strings/match.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>
#include <absl/strings/strip.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "common/files.h"
#include "common/status_macros.h"
#include "launch/cli.h"
#include "launch/hparams.h"
#include "launch/launchers.h"
#include "launch/options.h"
#include "parallel/device.h"
#include "trainer/run_lock.h"

namespace moa::launch {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSweepUsage =
    "usage: moa sweep launch|list|delete_incomplete --config FILE --output.dir DIR [flags]\n"
    "                 [--section.key=value ...]\n"
    "\n"
    "  launch             run every job that is not done (incomplete ones resume from their\n"
    "                     last checkpoint); a finished sweep runs nothing\n"
    "  list               print every job with its state (done, incomplete, not launched)\n"
    "  delete_incomplete  remove the run directories of this sweep's incomplete jobs, nothing\n"
    "                     else; runs in use are left alone\n"
    "\n"
    "In a sweep, four configuration keys describe the sweep rather than one run: --output.dir is\n"
    "the sweep directory (each job runs in output.dir/<job id>), --data.dataset and\n"
    "--adapter.method take lists (one job per entry), and --data.test_envs takes the sweep's\n"
    "test-environment sets. Every other --section.key=value goes to every job; a swept key given\n"
    "this way is pinned. --slurm.* keys (also read from the configuration's [slurm] section) are\n"
    "the Slurm resources of `--launcher slurm`.\n";

// Keys the sweep sets for each job itself.
const std::set<std::string>& SweepOwnedKeys() {
  static const std::set<std::string> keys = {"train.resume", "train.hparams_seed",
                                             "train.trial_seed", "train.seed"};
  return keys;
}

// The flags of `moa sweep <command>`, bound to `options`.
CommandLine SweepCommandLine(SweepOptions* options) {
  CommandLine cli("sweep", kSweepUsage);
  cli.AddString("config", "FILE", "base configuration (every job starts from it)",
                &options->config);
  cli.AddString("output.dir", "DIR",
                "the sweep directory: one run directory per job, named by its id (required)",
                &options->output_dir);
  cli.AddList("data.dataset", "NAME",
              "datasets, also comma separated (default: the configuration's data.dataset)",
              &options->datasets);
  cli.AddList("adapter.method", "METHOD",
              "adapter methods, also comma separated (default: the configuration's "
              "adapter.method)",
              &options->methods);
  cli.AddString("data.test_envs", "SPEC",
                "single, pairs (singles and pairs, DomainBed's default, needed by "
                "leave-one-domain-out), or a list of sets such as 0,5 or 0,0+1",
                &options->test_envs);
  cli.AddInteger("n_hparams", "N",
                 "hyper-parameter draws 0..N-1 (default 20; draw 0: the defaults)", 1,
                 &options->n_hparams);
  cli.AddInteger("n_hparams_from", "N", "first draw (default 0)", 0, &options->n_hparams_from);
  cli.AddInteger("n_trials", "N", "trials (trial_seed 0..N-1, default 3)", 1, &options->n_trials);
  cli.AddString("launcher", "L", "local, mpirun or slurm (default local)", &options->launcher);
  cli.AddInteger("max_parallel", "N", "local and mpirun: jobs running at once (default 1)", 1,
                 &options->max_parallel);
  cli.AddInteger("np", "N", "mpirun: ranks per job (default 2)", 1, &options->np);
  cli.AddString("gpus", "LIST",
                "local and mpirun: the GPUs jobs run on, each running job on GPUs of its own (one "
                "per rank) through CUDA_VISIBLE_DEVICES: auto (default: those this machine shows), "
                "none (leave CUDA_VISIBLE_DEVICES alone) or a list such as 0,1,2,3",
                &options->gpus);
  cli.AddString("mpirun", "CMD", "mpirun: the command with its flags (default mpirun)",
                &options->mpirun);
  cli.AddString("moa", "PATH", "the moa executable jobs run (default: this one)", &options->moa);
  cli.AddSwitch("dry_run", "slurm: write the sbatch script, do not submit it", &options->dry_run);
  cli.AddConfigKeys(&options->overrides);
  cli.AddDeprecated("output_dir", "output.dir");
  cli.AddDeprecated("datasets", "data.dataset");
  cli.AddDeprecated("methods", "adapter.method");
  cli.AddDeprecated("test_envs", "data.test_envs");
  cli.AddHelpEpilogue("\nSwept hyper-parameters (draws h > 0):\n" + HparamRegistryHelp());
  return cli;
}

// The words of a list flag, commas also separating.
std::vector<std::string> SplitCommas(const std::vector<std::string>& words) {
  std::vector<std::string> items;
  for (const std::string& w : words) {
    for (absl::string_view part : absl::StrSplit(w, ',', absl::SkipWhitespace())) {
      items.emplace_back(absl::StripAsciiWhitespace(part));
    }
  }
  return items;
}
// Whether the words give --name (as `--name V` or `--name=V`).
bool GivesFlag(const std::vector<std::string>& args, const std::string& name) {
  return std::any_of(args.begin(), args.end(), [&](const std::string& a) {
    return a == "--" + name || absl::StartsWith(a, "--" + name + "=");
  });
}

std::string ThisExecutable() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("moa") : self.string();
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
  const std::set<std::string>& ours = SweepDirectoryFiles();
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

// The sweep directory's flock on its moa-sweep.lock (a file kept for it; the kernel releases the
// flock when its holder ends): launches hold it shared for as long as their jobs run, so that
// launches of other jobs into the same directory run side by side; delete_incomplete holds it
// exclusive, so it never removes a job that a running launch has yet to start. The jobs a launch
// starts inherit the descriptor on purpose: jobs left running by a killed launcher keep it too.
class SweepDirLock {
 public:
  static absl::StatusOr<SweepDirLock> Take(const std::string& dir, bool exclusive) {
    const std::string path = dir + "/moa-sweep.lock";
    int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0 && errno == EACCES) fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) return absl::ErrnoToStatus(errno, "cannot open " + path);
    SweepDirLock lock(fd);
    if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) return lock;
    if (errno != EWOULDBLOCK) return lock;  // a filesystem without flock: no guard
    return absl::UnavailableError(
        exclusive ? "a moa sweep launch (or a job it started) is running jobs of " + dir +
                        "; delete_incomplete would remove the ones it has yet to start: stop it "
                        "first, or wait for it to end"
                  : "moa sweep delete_incomplete is removing runs of " + dir +
                        "; launch again when it has ended");
  }
  /// Makes a shared hold exclusive if no other process holds it (true; also where the
  /// filesystem has no flock).
  bool TryExclusive() { return flock(fd_, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK; }
  SweepDirLock(SweepDirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  SweepDirLock& operator=(SweepDirLock&&) = delete;
  ~SweepDirLock() {
    if (fd_ >= 0) close(fd_);
  }

 private:
  explicit SweepDirLock(int fd) : fd_(fd) {}
  int fd_;
};

int Launch(const SweepOptions& options, const std::vector<SweepJob>& jobs,
           SweepDirLock* sweep_lock) {
  PrintCounts(jobs);
  ReportForeign(options.output_dir, jobs);
  std::vector<SweepJob> pending;
  int incomplete = 0, queued = 0;
  std::vector<std::string> fresh;  // run directories this launch creates
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
    if (state == JobState::kNotLaunched) fresh.push_back(job.dir);
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
    auto base = LoadSweepBase(options);
    if (!base.ok()) {
      std::cerr << "moa sweep: " << base.status().message() << "\n";
      return 2;
    }
    auto script = LaunchOnSlurm(pending, options, base->slurm);
    if (!script.ok()) {
      // Nothing was submitted: the jobs stay "not launched" rather than look started.
      // Unless another launch runs in this directory (it may have started one of them).
      if (sweep_lock->TryExclusive()) {
        for (const std::string& dir : fresh) {
          std::error_code ignored;
          fs::remove_all(dir, ignored);
        }
      }
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
  int deleted = 0, in_use = 0;
  for (const SweepJob& job : jobs) {
    if (StateOf(job) != JobState::kIncomplete) continue;
    if (!fs::exists(job.dir + "/job.json")) {
      std::cerr << "moa sweep: " << job.dir
                << " has no job.json (moa sweep did not create it); left alone\n";
      continue;
    }
    const std::optional<trainer::LockOwner> owner = trainer::LiveLockOwner(job.dir);
    // An owner on another host that was a Slurm task which squeue knows to have ended is gone (a
    // killed rank 0 or a failed node leaves its lock behind); once Slurm has forgotten the job,
    // the message says how to free the run.
    const bool owner_ended = owner && !owner->slurm.empty() &&
                             owner->host != parallel::Hostname() &&
                             !SlurmTaskListed(owner->slurm).value_or(true);
    if (owner && !owner_ended) {
      std::cerr << "moa sweep: " << job.dir << " is in use by a running job (" << owner->description
                << "); left alone (if it is gone, remove " << job.dir << "/moa.lock)\n";
      ++in_use;
      continue;
    }
    const std::string task = RecordedSlurmTask(job.dir);
    // The owner's task, already asked about above, is usually the recorded one.
    const bool known_ended = owner_ended && owner->slurm == task;
    const std::optional<bool> queued =
        task.empty() || known_ended ? std::optional<bool>(false) : SlurmTaskListed(task);
    if (queued.value_or(true)) {
      std::cerr << "moa sweep: " << job.dir
                << (queued ? " is queued or running as Slurm job " + task + " (scancel it first)"
                           : " was submitted as Slurm job " + task +
                                 ", which squeue cannot tell about (remove it by hand once it "
                                 "has ended)")
                << "; left alone\n";
      ++in_use;
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
  return in_use == 0 ? 0 : 1;
}

}  // namespace

absl::StatusOr<SweepOptions> ParseSweepArgs(const std::vector<std::string>& args,
                                            std::ostream& notes) {
  SweepOptions options;
  if (args.empty()) return absl::InvalidArgumentError("missing the sweep command");
  options.command = args[0];
  if (options.command != "launch" && options.command != "list" &&
      options.command != "delete_incomplete") {
    return absl::InvalidArgumentError("unknown sweep command '" + options.command +
                                      "' (launch, list or delete_incomplete)");
  }
  MOA_RETURN_IF_ERROR(SweepCommandLine(&options).Parse({args.begin() + 1, args.end()}, notes));
  options.datasets = SplitCommas(options.datasets);
  options.methods = SplitCommas(options.methods);
  if (options.launcher != "local" && options.launcher != "mpirun" && options.launcher != "slurm") {
    return absl::InvalidArgumentError("--launcher must be local, mpirun or slurm, got '" +
                                      options.launcher + "'");
  }
  // A flag of another launcher would be ignored: the user meant a launch other than this one.
  const std::vector<std::pair<std::string, std::set<std::string>>> launcher_flags = {
      {"max_parallel", {"local", "mpirun"}}, {"np", {"mpirun"}}, {"mpirun", {"mpirun"}}};
  for (const auto& [flag, launchers] : launcher_flags) {
    if (launchers.count(options.launcher) || !GivesFlag(args, flag)) continue;
    return absl::InvalidArgumentError("--" + flag + " is for --launcher " +
                                      absl::StrJoin(launchers, " and ") + ", not " +
                                      options.launcher);
  }
  if (options.dry_run && options.launcher != "slurm") {
    // Ignoring it would start the jobs the user asked not to start.
    return absl::InvalidArgumentError(
        "--dry_run is for --launcher slurm (it writes the sbatch script without submitting it); "
        "moa sweep list shows the jobs a local or mpirun sweep would run");
  }
  if (options.gpus != "auto" && options.gpus != "none") {
    if (options.launcher == "slurm") {
      return absl::InvalidArgumentError(
          "--gpus is for the local and mpirun launchers; on Slurm ask for GPUs with "
          "--slurm.gpus_per_task");
    }
    for (absl::string_view gpu : absl::StrSplit(options.gpus, ',')) {
      const bool plain = !gpu.empty() && std::all_of(gpu.begin(), gpu.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-';
      });
      if (!plain) {
        return absl::InvalidArgumentError(
            "--gpus " + options.gpus +
            ": expected auto, none or a comma-separated list of GPU indices or UUIDs");
      }
    }
  }
  for (const std::string& override_text : options.overrides) {
    const std::string key = SplitOverride(override_text).first;
    if (SweepOwnedKeys().count(key)) {
      return absl::InvalidArgumentError("--" + key +
                                        " is set by moa sweep for each job (use --data.test_envs, "
                                        "--n_hparams, --n_trials and --output.dir)");
    }
    if (absl::StartsWith(key, "slurm.") && options.launcher != "slurm") {
      return absl::InvalidArgumentError("--" + key + " is for --launcher slurm, not " +
                                        options.launcher);
    }
  }
  if (options.output_dir.empty()) return absl::InvalidArgumentError("--output.dir is required");
  if (options.n_hparams_from >= options.n_hparams) {
    return absl::InvalidArgumentError("--n_hparams_from " + std::to_string(options.n_hparams_from) +
                                      " leaves no draw below --n_hparams " +
                                      std::to_string(options.n_hparams));
  }
  if (!options.config.empty() && !fs::is_regular_file(options.config)) {
    return absl::NotFoundError("--config " + options.config + " is not a file");
  }
  options.config = AbsolutePath(options.config);
  options.output_dir = AbsolutePath(options.output_dir);
  options.moa = options.moa.empty() ? ThisExecutable() : AbsolutePath(options.moa);
  return options;
}

int RunSweepCommand(const std::vector<std::string>& args) {
  if (args.empty() || CommandLine::AsksForHelp(args)) {
    SweepOptions unused;
    std::printf("%s", SweepCommandLine(&unused).Help().c_str());
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
  const bool deletes = options->command == "delete_incomplete";
  if (deletes && !fs::exists(options->output_dir)) {
    std::printf("moa sweep: %s does not exist; nothing to delete\n", options->output_dir.c_str());
    return 0;
  }
  if (const absl::Status made = MakeDirs(options->output_dir); !made.ok()) {
    std::cerr << "moa sweep: " << made.message() << "\n";
    return 1;
  }
  auto lock = SweepDirLock::Take(options->output_dir, /*exclusive=*/deletes);
  if (!lock.ok()) {
    std::cerr << "moa sweep: " << lock.status().message() << "\n";
    return 1;
  }
  if (deletes) return DeleteIncomplete(*options, *jobs);
  return Launch(*options, *jobs, &*lock);
}

}  // namespace moa::launch
