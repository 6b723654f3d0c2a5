#include "launch/commands.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "common/logging.h"
#include "common/safetensors.h"
#include "common/stop_signals.h"
#include "data/dataset.h"
#include "data/image_folder.h"
#include "launch/checkpoint_config.h"
#include "launch/cli.h"
#include "launch/collect.h"
#include "launch/hparams.h"
#include "launch/options.h"
#include "launch/report_command.h"
#include "launch/sweep.h"
#include "moa/peft.h"
#include "parallel/mesh_layout.h"
#include "parallel/mpi_communicator.h"
#include "trainer/build.h"
#include "trainer/evaluate.h"
#include "trainer/peft_export.h"
#include "trainer/predict.h"
#include "trainer/trainer.h"

namespace moa::launch {
namespace {

constexpr const char* kUsage =
    "usage: moa <command> [--config FILE] [--section.key=value ...]\n"
    "       moa train --resume RUN_DIR      continue a run from its last checkpoint\n"
    "\n"
    "commands:\n"
    "  train      train adapters on a frozen backbone (DomainBed protocol) and select a model\n"
    "  pretrain   train a whole classifier and save its backbone for `train` to start from\n"
    "  info       print parameter counts of a configuration's model (no image read, no\n"
    "             training; ImageFolder's folders are scanned for its classes)\n"
    "  eval       evaluate adapter checkpoints on every domain: --adapters A [B ...] (an\n"
    "             ensemble's logits are averaged); eval, predict and export build the model\n"
    "             the checkpoint was trained as (its stored configuration) unless --config\n"
    "             gives one\n"
    "  predict    --adapters A [B ...] --images DIR_OR_LIST --output predictions.csv: classify\n"
    "             image files, top-k classes and probabilities per image (mpirun shards them)\n"
    "  export     --merge --adapters A --output OUT.safetensors: fold LoRA into the backbone;\n"
    "             --format peft --adapters A --output DIR: LoRA for Hugging Face PEFT + timm\n"
    "  data check --data.dataset NAME --data.data_dir DIR [--data.workers N]: list an\n"
    "             image-folder dataset's environments, classes and counts, and decode every image\n"
    "  sweep      launch|list|delete_incomplete a hyper-parameter sweep (local, mpirun, slurm)\n"
    "  collect    --input_dir DIR: DomainBed's model-selection tables of a sweep\n"
    "  report     RUN_OR_SWEEP_DIR [...] --output report.html: curves, router heat maps,\n"
    "             selection and configuration differences on one HTML page\n"
    "\n"
    "Options are INI keys: a file given with --config, overridden by --section.key=value (or\n"
    "--section.key value). `moa <command> --help` lists a command's flags and options.\n";

// What train, pretrain, info, eval, predict and export were given.
struct RunCommandArgs {
  std::string config;
  std::string resume;
  std::vector<std::string> adapters;
  std::string output;
  bool merge = false;
  std::string format;
  std::string images;
  int64_t top_k = 5;
  bool logits = false;
  std::vector<std::string> overrides;
};

// The commands that build a model from adapter checkpoints (and, by default, from the
// configuration stored in them).
bool ReadsCheckpoints(const std::string& command) {
  return command == "eval" || command == "predict" || command == "export";
}

// The flags of `command` (train, pretrain, info, eval, predict or export), bound to `args`.
CommandLine RunCommandLine(const std::string& command, RunCommandArgs* args) {
  std::string usage = "usage: moa " + command + " [--config FILE] [--section.key=value ...]\n";
  if (command == "train") usage += "       moa train --resume RUN_DIR [--section.key=value ...]\n";
  if (command == "eval") usage = "usage: moa eval --adapters A [B ...] [--config FILE]\n";
  if (command == "export") {
    usage =
        "usage: moa export --merge --adapters A --output OUT.safetensors [--config FILE]\n"
        "       moa export --format peft --adapters A --output DIR [--config FILE]\n";
  }
  if (command == "predict") {
    usage =
        "usage: moa predict --adapters A [B ...] --images DIR_OR_LIST "
        "--output predictions.csv [--top_k K] [--logits] [--config FILE]\n";
  }
  CommandLine cli(command, usage);
  const bool reads_checkpoints = ReadsCheckpoints(command);
  cli.AddString("config", "FILE",
                reads_checkpoints
                    ? "the INI configuration (default: the one the first checkpoint was trained "
                      "with; a file given must describe the same model)"
                    : "the INI configuration (default: every option's default)",
                &args->config);
  if (command == "train" || command == "pretrain") {
    cli.AddString("resume", "RUN_DIR",
                  "continue the run in RUN_DIR from its last checkpoint, with its config.ini",
                  &args->resume);
  }
  if (command == "eval" || command == "predict" || command == "export") {
    cli.AddList("adapters", "FILE",
                command == "export" ? "the LoRA checkpoint to fold into the backbone"
                                    : "adapter checkpoints (several: an ensemble, logits averaged)",
                &args->adapters);
  }
  if (command == "predict") {
    cli.AddString("images", "DIR_OR_LIST",
                  "a folder of .jpg/.jpeg/.png files (searched recursively), or a text file with "
                  "one image path per line",
                  &args->images);
    cli.AddString("output", "FILE",
                  "the CSV: one row per image, its top-k classes and probabilities", &args->output);
    cli.AddInteger("top_k", "K", "classes per image (default 5)", 1, &args->top_k);
    cli.AddSwitch("logits", "add one logit:<class> column per class", &args->logits);
  }
  if (command == "export") {
    cli.AddSwitch("merge", "fold the LoRA update into the backbone's weights", &args->merge);
    cli.AddString("format", "peft",
                  "peft: adapter_config.json and adapter_model.safetensors for Hugging Face PEFT "
                  "on the timm ViT",
                  &args->format);
    cli.AddString("output", "FILE_OR_DIR",
                  "the merged model's safetensors (--merge), or the PEFT folder (--format peft)",
                  &args->output);
  }
  cli.AddConfigKeys(&args->overrides);
  return cli;
}

std::string WithCommas(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return (n < 0 ? "-" : "") + out;
}

int Info(const trainer::RunConfig& config) {
  auto info = trainer::ModelDatasetInfo(config);
  if (!info.ok()) {
    std::cerr << "moa info: " << info.status().message() << "\n";
    return 2;
  }
  auto model = trainer::BuildModel(config, *info);
  if (!model.ok()) {
    std::cerr << "moa info: " << model.status().message() << "\n";
    return 2;
  }
  const ParameterCounts c = CountParameters(**model);
  std::printf("model      %s, adapter.method %s, dataset %s (%lld classes)\n",
              config.model.arch.c_str(), config.adapter.method.c_str(), config.data.dataset.c_str(),
              static_cast<long long>(info->num_classes));
  std::printf("%-10s %14s\n", "group", "parameters");
  std::printf("%-10s %14s\n", "backbone", WithCommas(c.backbone).c_str());
  std::printf("%-10s %14s\n", "adapters", WithCommas(c.adapters).c_str());
  std::printf("%-10s %14s\n", "router", WithCommas(c.router).c_str());
  std::printf("%-10s %14s\n", "head", WithCommas(c.head).c_str());
  std::printf("%-10s %14s\n", "total", WithCommas(c.total()).c_str());
  std::printf("%-10s %14s (%s without the head)\n", "trainable", WithCommas(c.trainable).c_str(),
              WithCommas(c.trainable - c.head).c_str());
  return 0;
}

int TrainOrPretrain(const trainer::RunConfig& config, bool pretrain) {
  std::unique_ptr<parallel::Communicator> world = parallel::MakeWorldCommunicator();
  if (world->size() > 1) {
    SetLogRankPrefix("[rank " + std::to_string(world->rank()) + "] ");
    if (world->rank() != 0) SetLogLevel(LogLevel::kWarning);  // the coordinator reports progress
  }
  auto summary =
      pretrain ? trainer::Pretrain(config, world.get()) : trainer::Train(config, world.get());
  if (!summary.ok() && trainer::IsStopped(summary.status())) {
    // Every rank stopped at the same step after the state was saved (the coordinator logged it):
    // no abort, a distinct code.
    return kPreemptedExitCode;
  }
  if (!summary.ok() && world->size() > 1) {
    // One failing rank ends the whole job rather than leaving the others waiting in a collective.
    parallel::AbortJob(std::string(pretrain ? "pretrain" : "train") + ": " +
                       std::string(summary.status().message()));
  }
  if (world->rank() != 0) return summary.ok() ? 0 : 1;
  if (!summary.ok()) {
    std::cerr << "moa " << (pretrain ? "pretrain" : "train") << ": " << summary.status().message()
              << "\n";
    return 1;
  }
  if (!summary->selection_table.empty()) {
    std::printf("\nmodel selection (test-domain `in` accuracy, %%), run %s\n%s",
                summary->run_dir.c_str(), summary->selection_table.c_str());
  }
  std::printf("run directory: %s\n", summary->run_dir.c_str());
  return 0;
}

// `moa predict`: every rank classifies its share; a failing rank ends the job. Exit 1 when an
// image was skipped (each named in the log), after the others are written.
int PredictImages(const trainer::RunConfig& config, const RunCommandArgs& args) {
  std::unique_ptr<parallel::Communicator> world = parallel::MakeWorldCommunicator();
  if (world->size() > 1) SetLogRankPrefix("[rank " + std::to_string(world->rank()) + "] ");
  trainer::PredictOptions options;
  options.adapters = args.adapters;
  options.images = args.images;
  options.output = args.output;
  options.top_k = args.top_k;
  options.logits = args.logits;
  auto summary = trainer::Predict(config, options, *world);
  if (!summary.ok() && world->size() > 1) {
    parallel::AbortJob("predict: " + std::string(summary.status().message()));
  }
  if (!summary.ok()) {
    std::cerr << "moa predict: " << summary.status().message() << "\n";
    return 1;
  }
  if (world->rank() == 0) {
    std::printf("wrote %s: %lld of %lld images classified", args.output.c_str(),
                static_cast<long long>(summary->images - summary->failed),
                static_cast<long long>(summary->images));
    if (summary->failed > 0) {
      std::printf(", %lld skipped (named above)", static_cast<long long>(summary->failed));
    }
    std::printf("\n");
  }
  return summary->failed > 0 ? 1 : 0;
}

// `moa data check`: the layout and counts of an image-folder dataset, then a full decode of
// every image, naming each one that fails. Returns 0 when every image decodes.
int DataCheck(const std::vector<std::string>& args) {
  std::string dataset = "ImageFolder", data_dir;
  int64_t workers = static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  CommandLine cli("data check",
                  "usage: moa data check --data.dataset NAME --data.data_dir DIR "
                  "[--data.workers N]\n\n"
                  "Lists an image-folder dataset's environments, classes and image counts, then "
                  "decodes every\nimage and names each one that fails (exit code 1).\n");
  cli.AddString("data.dataset", "NAME",
                "an image-folder dataset: PACS, VLCS, OfficeHome, TerraIncognita, DomainNet or "
                "ImageFolder (default: ImageFolder)",
                &dataset);
  cli.AddString("data.data_dir", "DIR", "the folder holding the dataset (required)", &data_dir);
  cli.AddInteger("data.workers", "N", "decoding threads (default: every core)", 1, &workers);
  cli.AddDeprecated("dataset", "data.dataset");
  cli.AddDeprecated("data_dir", "data.data_dir");
  cli.AddDeprecated("workers", "data.workers");
  if (std::optional<int> exit_code = cli.ParseOrExitCode(args)) return *exit_code;
  auto info = data::LookupDataset(dataset);
  if (!info.ok() || info->channels != 3 || data_dir.empty()) {
    std::cerr << "moa data check: "
              << (!info.ok()         ? std::string(info.status().message())
                  : data_dir.empty() ? std::string("--data.data_dir is required")
                                     : dataset + " is not an image-folder dataset")
              << "\n";
    return 2;
  }
  const std::string root = data::ImageFolderRoot(*info, data_dir);
  auto layout = data::ScanImageFolder(root, info->environments, info->num_classes);
  if (!layout.ok()) {
    std::cerr << "moa data check: " << layout.status().message() << "\n";
    return 1;
  }
  std::printf("%s at %s: %zu environments, %zu classes\n", dataset.c_str(), root.c_str(),
              layout->environments.size(), layout->classes.size());
  std::vector<std::string> files;
  for (size_t e = 0; e < layout->environments.size(); ++e) {
    const data::FolderEnvironment& env = layout->environments[e];
    std::vector<int64_t> per_class(layout->classes.size(), 0);
    for (int64_t label : env.labels) ++per_class[label];
    std::printf("env%zu %-16s %8zu images:", e, env.name.c_str(), env.files.size());
    for (size_t c = 0; c < per_class.size(); ++c) {
      std::printf("%s %s %lld", c == 0 ? "" : ",", layout->classes[c].c_str(),
                  static_cast<long long>(per_class[c]));
    }
    std::printf("\n");
    files.insert(files.end(), env.files.begin(), env.files.end());
  }
  std::printf("decoding %zu images on %lld threads\n", files.size(),
              static_cast<long long>(workers));
  std::fflush(stdout);
  const data::CheckReport report =
      data::CheckImages(files, data::ImageCheck::kFull, static_cast<int>(workers));
  for (const data::CheckFailure& failure : report.failures) {
    std::printf("cannot decode: %s\n", failure.message.c_str());
  }
  if (report.failures.empty()) {
    std::printf("all %lld images decode\n", static_cast<long long>(report.checked));
    return 0;
  }
  std::printf("%zu of %lld images do not decode\n", report.failures.size(),
              static_cast<long long>(report.checked));
  return 1;
}

}  // namespace

int RunCommand(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::printf("%s\noptions:%s", kUsage, OptionsHelp().c_str());
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  if (command == "data") {
    if (args.size() < 2 || args[1] != "check") {
      std::cerr << "moa data: the subcommand is `check`\n\n" << kUsage;
      return 2;
    }
    return DataCheck(std::vector<std::string>(args.begin() + 2, args.end()));
  }
  if (command == "sweep") return RunSweepCommand({args.begin() + 1, args.end()});
  if (command == "collect") return RunCollectCommand({args.begin() + 1, args.end()});
  if (command == "report") return RunReportCommand({args.begin() + 1, args.end()});
  if (command != "train" && command != "pretrain" && command != "info" && command != "eval" &&
      command != "predict" && command != "export") {
    std::cerr << "moa: unknown command '" << command << "'\n\n" << kUsage;
    return 2;
  }
  RunCommandArgs parsed;
  CommandLine cli = RunCommandLine(command, &parsed);
  if (std::optional<int> exit_code = cli.ParseOrExitCode({args.begin() + 1, args.end()})) {
    return *exit_code;
  }
  // Arguments a command cannot do without: usage errors (exit 2), before any work.
  std::string missing;
  if ((command == "eval" || command == "predict") && parsed.adapters.empty())
    missing = "--adapters";
  if (command == "predict" && parsed.images.empty()) missing = "--images";
  if (command == "predict" && parsed.output.empty()) missing = "--output";
  if (!missing.empty()) {
    std::cerr << "moa " << command << ": " << missing << " is required\n";
    return 2;
  }
  if (command == "export") {
    if (!parsed.format.empty() && parsed.format != "peft") {
      std::cerr << "moa export: --format " << parsed.format << ": the one format is peft\n";
      return 2;
    }
    if (parsed.merge == (parsed.format == "peft") || parsed.adapters.size() != 1 ||
        parsed.output.empty()) {
      std::cerr << "moa export: usage: moa export --merge --adapters A --output "
                   "OUT.safetensors [--config C]\n"
                   "       moa export --format peft --adapters A --output DIR [--config C]\n";
      return 2;
    }
  }
  const bool reads_checkpoints = ReadsCheckpoints(command);
  if (reads_checkpoints && parsed.config.empty()) {
    // The configuration comes from the checkpoints: a file that cannot be read is the same
    // error (exit 1) as when --config is given and the command reads it.
    for (const std::string& adapter : parsed.adapters) {
      const auto metadata = ReadSafetensorsMetadata(adapter);
      if (!metadata.ok()) {
        std::cerr << "moa " << command << ": " << metadata.status().message() << "\n";
        return 1;
      }
    }
  }
  // --resume DIR: the run's own configuration, continued in place.
  std::string config_path = parsed.config;
  std::vector<std::string> overrides = parsed.overrides;
  // Keys the command sets itself: a user's value for one would be silently replaced.
  std::vector<std::pair<std::string, std::string>> fixed;  // key, why
  if (!parsed.resume.empty()) {
    for (const char* key : {"train.resume", "output.dir"})
      fixed.emplace_back(key, "with --resume, which continues the run in its folder");
  }
  if (command == "pretrain") {
    for (const char* key : {"adapter.method", "model.backbone"}) {
      fixed.emplace_back(key,
                         "to pretrain, which trains the whole model from a random initialisation");
    }
  }
  for (const std::string& o : overrides) {
    const std::string key = SplitOverride(o).first;
    for (const auto& [fixed_key, why] : fixed) {
      if (key != fixed_key) continue;
      std::cerr << "moa " << command << ": --" << key << " cannot be given " << why << "\n";
      return 2;
    }
  }
  if (!parsed.resume.empty()) {
    if (config_path.empty()) config_path = parsed.resume + "/config.ini";
    overrides.push_back("train.resume=" + parsed.resume);
    overrides.push_back("output.dir=" + parsed.resume);
  }
  if (command == "info") {
    // Parameter counts need no weights.
    overrides.push_back(std::string("model.backbone=") + trainer::kRandomBackbone);
  }
  if (command == "pretrain") {
    // Pretraining trains the whole classifier from a random initialisation.
    overrides.push_back("adapter.method=full");
    overrides.push_back("model.backbone=");
  }
  // `moa train --train.hparams_seed=N` trains draw N, as a sweep's job of that draw does.
  std::vector<std::pair<std::string, std::string>> drawn;
  // eval, predict and export: the checkpoints' own configuration unless --config gives one that
  // describes the same model.
  std::ostringstream checkpoint_notes;
  auto launch_config =
      command == "train"
          ? LoadConfigWithDraw(config_path, overrides, parallel::LaunchedWorldSize(), &drawn)
      : reads_checkpoints
          ? ConfigForCheckpoints(config_path, overrides, parsed.adapters,
                                 /*split_notes=*/command == "eval", checkpoint_notes)
          : LoadLaunchConfig(config_path, overrides);
  if (!launch_config.ok()) {
    std::cerr << "moa " << command << ": " << launch_config.status().message() << "\n";
    return 2;
  }
  if (!drawn.empty() && parallel::LaunchedRank() == 0) {
    std::string values;
    for (const auto& [key, value] : drawn) values += " " + key + "=" + value;
    Log(LogLevel::kInfo) << "hyper-parameter draw " << launch_config->run.train.hparams_seed
                         << " (trial " << launch_config->run.train.trial_seed << "):" << values
                         << "; keys given on the command line keep their values";
  }
  if (command == "train" || command == "pretrain") {
    return TrainOrPretrain(launch_config->run, command == "pretrain");
  }
  const trainer::RunConfig& config = launch_config->run;
  if (parallel::LaunchedRank() == 0) std::cerr << checkpoint_notes.str();
  if (command == "eval") {
    auto scores = trainer::EvaluateAdapters(config, parsed.adapters);
    if (!scores.ok()) {
      std::cerr << "moa eval: " << scores.status().message() << "\n";
      return 1;
    }
    std::printf("%s", trainer::FormatDomainScores(*scores).c_str());
    return 0;
  }
  if (command == "predict") return PredictImages(config, parsed);
  if (command == "export") {
    const bool peft = parsed.format == "peft";
    const absl::Status status =
        peft ? trainer::ExportPeft(config, parsed.adapters[0], parsed.output)
             : trainer::ExportMerged(config, parsed.adapters[0], parsed.output);
    if (!status.ok()) {
      std::cerr << "moa export: " << status.message() << "\n";
      return 1;
    }
    std::printf("wrote %s\n", parsed.output.c_str());
    return 0;
  }
  return Info(config);
}

}  // namespace moa::launch
