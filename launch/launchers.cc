#include "launch/launchers.h"

#include <absl/strings/match.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>
#include <absl/strings/strip.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <thread>

#include "common/files.h"
#include "common/status_macros.h"
#include "common/stop_signals.h"
#include "parallel/device.h"

extern char** environ;

namespace moa::launch {
namespace {

bool IsPlainWord(const std::string& text) {
  if (text.empty()) return false;
  for (unsigned char c : text) {
    if (!std::isalnum(c) &&
        std::string("_-+=.,/:@%").find(static_cast<char>(c)) == std::string::npos)
      return false;
  }
  return true;
}

// Starts `argv` with stdout and stderr appended to the given files and this process's
// environment, CUDA_VISIBLE_DEVICES set to `visible_gpus` unless that is empty; returns its pid.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& out_path,
                            const std::string& err_path, const std::string& visible_gpus) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  std::vector<char*> raw;
  for (const std::string& a : argv) raw.push_back(const_cast<char*>(a.c_str()));
  raw.push_back(nullptr);
  const std::string gpu_variable = "CUDA_VISIBLE_DEVICES=" + visible_gpus;
  std::vector<char*> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (visible_gpus.empty() || !absl::StartsWith(*entry, "CUDA_VISIBLE_DEVICES=")) {
      environment.push_back(*entry);
    }
  }
  if (!visible_gpus.empty()) environment.push_back(const_cast<char*>(gpu_variable.c_str()));
  environment.push_back(nullptr);
  pid_t pid = 0;
  const int error = posix_spawnp(&pid, raw[0], &actions, nullptr, raw.data(), environment.data());
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    return absl::FailedPreconditionError("cannot start " + argv[0] + ": " + std::strerror(error));
  }
  return pid;
}

std::string ExitDescription(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::string NowStamp() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char text[32];
  std::strftime(text, sizeof(text), "%Y%m%d-%H%M%S", &local);
  return text;
}

// Runs a shell command and returns what it printed, without trailing blanks; `status` gets its
// wait status (-1 when it could not start).
std::string CommandOutput(const std::string& command, int* status) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    *status = -1;
    return output;
  }
  char buffer[512];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  *status = pclose(pipe);
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  return output;
}

// The MPI plugins `srun --mpi=list` names (pmix, pmix_v4, pmi2, none, ...); empty when srun is
// missing.
std::vector<std::string> SrunMpiPlugins() {
  int status = 0;
  const std::string listing = CommandOutput("srun --mpi=list 2>&1", &status);
  std::vector<std::string> plugins;
  if (status != 0) return plugins;
  for (absl::string_view line : absl::StrSplit(listing, '\n')) {
    if (absl::StartsWith(line, "\t")) plugins.emplace_back(absl::StripAsciiWhitespace(line));
    const size_t colon = line.find("versions available:");
    if (colon == absl::string_view::npos) continue;
    for (absl::string_view v :
         absl::StrSplit(line.substr(colon + 19), ',', absl::SkipWhitespace())) {
      plugins.emplace_back(absl::StripAsciiWhitespace(v));
    }
  }
  return plugins;
}

// A value for an #SBATCH line: sbatch reads these lines itself, without a shell, so only plain
// words are accepted.
absl::Status CheckDirectiveValue(const std::string& key, const std::string& value) {
  if (IsPlainWord(value)) return absl::OkStatus();
  return absl::InvalidArgumentError(key + " = '" + value +
                                    "' cannot go on an #SBATCH line (use letters, digits and "
                                    "_-+=.,/:@% only)");
}

}  // namespace

std::string ShellQuote(const std::string& text) {
  if (IsPlainWord(text)) return text;
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

std::vector<std::string> SweepGpus(const std::string& option) {
  std::vector<std::string> gpus;
  if (option == "none") return gpus;
  std::string list = option;
  if (option == "auto") {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    if (visible != nullptr) {
      list = visible;
    } else {
      list.clear();
      for (int g = 0; g < parallel::VisibleGpus(); ++g) {
        list += (g == 0 ? "" : ",") + std::to_string(g);
      }
    }
  }
  for (absl::string_view gpu : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    gpus.emplace_back(absl::StripAsciiWhitespace(gpu));
  }
  return gpus;
}

std::string SlotGpus(const std::vector<std::string>& gpus, int64_t slot, int64_t ranks) {
  std::vector<std::string> mine;
  if (gpus.empty()) return "";
  const int64_t count = static_cast<int64_t>(gpus.size());
  for (int64_t r = 0; r < ranks; ++r) {
    const std::string& gpu = gpus[static_cast<size_t>((slot * ranks + r) % count)];
    if (std::find(mine.begin(), mine.end(), gpu) == mine.end()) mine.push_back(gpu);
  }
  return absl::StrJoin(mine, ",");
}

int RunJobsAsProcesses(const std::vector<SweepJob>& jobs, const SweepOptions& options) {
  const std::vector<std::string> gpus = SweepGpus(options.gpus);
  const int64_t ranks = options.launcher == "mpirun" ? options.np : 1;
  const int64_t slots = std::min<int64_t>(options.max_parallel, static_cast<int64_t>(jobs.size()));
  if (!gpus.empty() && slots * ranks > static_cast<int64_t>(gpus.size())) {
    std::printf("moa sweep: %lld job%s at once x %lld rank%s on %zu GPU%s (%s): jobs share GPUs\n",
                static_cast<long long>(slots), slots == 1 ? "" : "s", static_cast<long long>(ranks),
                ranks == 1 ? "" : "s", gpus.size(), gpus.size() == 1 ? "" : "s",
                absl::StrJoin(gpus, ",").c_str());
  }
  std::vector<bool> slot_taken(static_cast<size_t>(std::max<int64_t>(slots, 1)), false);
  std::vector<std::string> prefix;
  if (options.launcher == "mpirun") {
    for (absl::string_view word : absl::StrSplit(options.mpirun, ' ', absl::SkipWhitespace())) {
      prefix.emplace_back(word);
    }
    prefix.push_back("-np");
    prefix.push_back(std::to_string(options.np));
  }
  prefix.push_back(options.moa);

  struct Running {
    pid_t pid;
    size_t index;
    size_t slot;
  };
  std::vector<Running> running;
  size_t next = 0, finished = 0;
  int failed = 0;
  const size_t total = jobs.size();
  while (finished < total) {
    while (next < total && running.size() < static_cast<size_t>(options.max_parallel)) {
      const SweepJob& job = jobs[next];
      std::vector<std::string> argv = prefix;
      for (const std::string& a : RunArgs(job)) argv.push_back(a);
      const size_t slot = static_cast<size_t>(
          std::find(slot_taken.begin(), slot_taken.end(), false) - slot_taken.begin());
      const std::string visible = SlotGpus(gpus, static_cast<int64_t>(slot), ranks);
      auto pid = Spawn(argv, job.dir + "/out.txt", job.dir + "/err.txt", visible);
      if (!pid.ok()) {
        std::cerr << "moa sweep: " << job.id << ": " << pid.status().message() << "\n";
        ++failed;
        ++finished;
      } else {
        const std::string on = visible.empty() ? "" : "  (CUDA_VISIBLE_DEVICES=" + visible + ")";
        std::printf("[%zu/%zu] started %s  %s%s\n", next + 1, total, job.id.c_str(),
                    job.Describe().c_str(), on.c_str());
        std::fflush(stdout);
        slot_taken[slot] = true;
        running.push_back({*pid, next, slot});
      }
      ++next;
    }
    bool reaped = false;
    for (size_t r = 0; r < running.size(); ++r) {
      int status = 0;
      if (waitpid(running[r].pid, &status, WNOHANG) != running[r].pid) continue;
      const SweepJob& job = jobs[running[r].index];
      ++finished;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        std::printf("[%zu/%zu] done    %s\n", finished, total, job.id.c_str());
      } else {
        ++failed;
        std::printf("[%zu/%zu] FAILED  %s (%s), see %s/err.txt\n", finished, total, job.id.c_str(),
                    ExitDescription(status).c_str(), job.dir.c_str());
      }
      std::fflush(stdout);
      slot_taken[running[r].slot] = false;
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(r));
      reaped = true;
      break;
    }
    if (!reaped && !running.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return failed;
}

absl::StatusOr<std::string> SlurmScript(const std::vector<SweepJob>& jobs,
                                        const SweepOptions& options, const SlurmConfig& slurm) {
  if (jobs.empty()) return absl::InvalidArgumentError("no job to put in a Slurm script");
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"slurm.partition", slurm.partition},
                                                        {"slurm.account", slurm.account},
                                                        {"slurm.time", slurm.time},
                                                        {"slurm.job_name", slurm.job_name},
                                                        {"slurm.mpi", slurm.mpi},
                                                        {"slurm.signal", slurm.signal}}) {
    if (!value.empty()) MOA_RETURN_IF_ERROR(CheckDirectiveValue(key, value));
  }
  const std::string log_dir = options.output_dir + "/slurm";
  MOA_RETURN_IF_ERROR(CheckDirectiveValue("--output.dir", log_dir));

  std::string s;
  s += "#!/bin/bash\n";
  s += "# moa sweep: " + std::to_string(jobs.size()) +
       " training runs as one Slurm job array, written by `moa sweep launch`.\n";
  s += "# Edit the #SBATCH lines as you need and submit again with: sbatch THIS_FILE\n";
  s += "# Each array task trains one run; a task whose run is done does nothing, and a requeued\n";
  s += "# or restarted task resumes its run from the last full-state checkpoint.\n";
  s += "#SBATCH --job-name=" + (slurm.job_name.empty() ? "moa-sweep" : slurm.job_name) + "\n";
  s += "#SBATCH --array=0-" + std::to_string(jobs.size() - 1) +
       (slurm.max_running > 0 ? "%" + std::to_string(slurm.max_running) : "") + "\n";
  s += "#SBATCH --nodes=" + std::to_string(slurm.nodes) + "\n";
  s += "#SBATCH --ntasks-per-node=" + std::to_string(slurm.ntasks_per_node) + "\n";
  if (slurm.cpus_per_task > 0) {
    s += "#SBATCH --cpus-per-task=" + std::to_string(slurm.cpus_per_task) + "\n";
  }
  if (slurm.gpus_per_task > 0) {
    s += "#SBATCH --gpus-per-task=" + std::to_string(slurm.gpus_per_task) + "\n";
  }
  if (!slurm.time.empty()) s += "#SBATCH --time=" + slurm.time + "\n";
  if (!slurm.partition.empty()) s += "#SBATCH --partition=" + slurm.partition + "\n";
  if (!slurm.account.empty()) s += "#SBATCH --account=" + slurm.account + "\n";
  // The warning signal goes to the tasks (not the batch shell): moa saves its state, exits with
  // kPreemptedExitCode, and this script requeues the task, which then resumes.
  if (!slurm.signal.empty()) s += "#SBATCH --signal=" + slurm.signal + "\n";
  s += "#SBATCH --requeue\n";
  s += "#SBATCH --open-mode=append\n";
  s += "#SBATCH --output=" + log_dir + "/%A_%a.out\n";
  s += "set -euo pipefail\n\n";
  s += "moa=" + ShellQuote(options.moa) + "\n";
  s += "mpi=" + ShellQuote(slurm.mpi) + "\n\n";
  s += "case \"${SLURM_ARRAY_TASK_ID:?submit this script with sbatch}\" in\n";
  for (size_t i = 0; i < jobs.size(); ++i) {
    const SweepJob& job = jobs[i];
    s += "  " + std::to_string(i) + ")  # " + job.Describe() + "\n";
    s += "    run_dir=" + ShellQuote(job.dir) + "\n";
    s += "    args=(";
    // One option per line; --config and its file share one.
    std::vector<std::string> quoted;
    for (const std::string& a : job.train_args) {
      if (absl::StartsWith(a, "--output.dir=")) continue;  // added below from run_dir
      if (!quoted.empty() && quoted.back() == "--config") {
        quoted.back() += " " + ShellQuote(a);
      } else {
        quoted.push_back(ShellQuote(a));
      }
    }
    s += absl::StrJoin(quoted, " \\\n          ") + ") ;;\n";
  }
  s += "  *) echo \"no run for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\n";
  s += "esac\n\n";
  s += "if [ -f \"$run_dir/done\" ]; then\n";
  s += "  echo \"moa sweep: $run_dir is done; nothing to run\"\n";
  s += "  exit 0\n";
  s += "fi\n";
  s += "if [ -f \"$run_dir/checkpoints/state.safetensors\" ]; then\n";
  s += "  echo \"moa sweep: resuming $run_dir from its last checkpoint (restart "
       "${SLURM_RESTART_COUNT:-0})\"\n";
  s += "  train=(train --resume \"$run_dir\")\n";
  s += "else\n";
  s += "  train=(train \"${args[@]}\" --output.dir=\"$run_dir\")\n";
  s += "fi\n";
  s += "status=0\n";
  // No --kill-on-bad-exit: a rank that dies already ends the step (Open MPI aborts the job, and
  // with pmix Slurm cancels the step), and with it srun would report the preempted ranks' exit
  // 75 as the 143 of the ranks it terminates, so the task would not be requeued.
  s += "srun --mpi=\"$mpi\" \"$moa\" \"${train[@]}\" || status=$?\n";
  s += "if [ \"$status\" -eq " + std::to_string(kPreemptedExitCode) + " ]; then\n";
  s += "  task=\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n";
  s +=
      "  echo \"moa sweep: $run_dir stopped on a signal with its state saved; requeueing $task\"\n";
  s += "  scontrol requeue \"$task\"\n";
  s += "fi\n";
  s += "exit \"$status\"\n";
  return s;
}

std::optional<bool> SlurmTaskListed(const std::string& task) {
  if (!IsPlainWord(task)) return std::nullopt;
  int status = 0;
  const std::string listed = CommandOutput("squeue -h -o %i -j " + task + " 2>/dev/null", &status);
  // squeue also fails on a job it does not know, which may be one that Slurm has purged since it
  // ended (MinJobAge) or one of another cluster sharing the filesystem: unknown either way.
  if (status != 0) return std::nullopt;
  return !listed.empty();
}

std::string RecordedSlurmTask(const std::string& run_dir) {
  auto recorded = ReadFile(run_dir + "/slurm_task");
  if (!recorded.ok()) return "";
  std::string task = *recorded;
  while (!task.empty() && (task.back() == '\n' || task.back() == ' ')) task.pop_back();
  return task;
}

std::string QueuedSlurmTask(const std::string& run_dir) {
  const std::string task = RecordedSlurmTask(run_dir);
  return !task.empty() && SlurmTaskListed(task).value_or(false) ? task : "";
}

absl::StatusOr<std::string> LaunchOnSlurm(const std::vector<SweepJob>& jobs,
                                          const SweepOptions& options, const SlurmConfig& slurm) {
  MOA_ASSIGN_OR_RETURN(const std::string script, SlurmScript(jobs, options, slurm));
  const std::string dir = options.output_dir + "/slurm";
  MOA_RETURN_IF_ERROR(MakeDirs(dir));
  std::string path = dir + "/sweep-" + NowStamp() + ".sbatch";
  for (int n = 2; std::filesystem::exists(path); ++n) {
    path = dir + "/sweep-" + NowStamp() + "-" + std::to_string(n) + ".sbatch";
  }
  MOA_RETURN_IF_ERROR(WriteFileAtomically(path, script));
  std::printf("moa sweep: wrote %s (%zu array tasks)\n", path.c_str(), jobs.size());
  if (options.dry_run) {
    std::printf("moa sweep: --dry_run: not submitted; submit it with: sbatch %s\n",
                ShellQuote(path).c_str());
    return path;
  }
  const std::vector<std::string> plugins = SrunMpiPlugins();
  if (!plugins.empty() && std::find(plugins.begin(), plugins.end(), slurm.mpi) == plugins.end()) {
    return absl::InvalidArgumentError(
        "slurm.mpi = " + slurm.mpi +
        " is not an MPI plugin of this Slurm (srun --mpi=list: " + absl::StrJoin(plugins, ", ") +
        "); set --slurm.mpi=... and launch again (" + path + " was written, not submitted)");
  }
  int status = 0;
  const std::string output =
      CommandOutput("sbatch --parsable " + ShellQuote(path) + " 2>&1", &status);
  if (status != 0) {
    return absl::UnavailableError("sbatch " + path + " failed (" + ExitDescription(status) +
                                  "): " + output +
                                  (WIFEXITED(status) && WEXITSTATUS(status) == 127
                                       ? " (is this a Slurm login node? sbatch is not on PATH)"
                                       : ""));
  }
  std::printf("moa sweep: submitted Slurm job %s\n", output.c_str());
  const std::string job_id = output.substr(0, output.find(';'));  // "ID;CLUSTER" on federations
  // The jobs run now whatever happens here: a record that cannot be written is a warning.
  for (size_t i = 0; i < jobs.size(); ++i) {
    const absl::Status recorded =
        WriteFileAtomically(jobs[i].dir + "/slurm_task", job_id + "_" + std::to_string(i) + "\n");
    if (!recorded.ok()) {
      std::cerr << "moa sweep: warning: " << recorded.message() << " (array task " << i
                << " runs; a relaunch before it ends would not know it is queued)\n";
    }
  }
  return path;
}

}  // namespace moa::launch
