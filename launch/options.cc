#include "launch/options.h"

#include <absl/strings/match.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "common/files.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "data/dataset.h"
#include "launch/option_table.h"
#include "moa/models.h"
#include "moa/peft.h"
#include "parallel/mesh_layout.h"
#include "trainer/build.h"

namespace moa::launch {
namespace po = boost::program_options;
using trainer::RunConfig;

namespace {

// A run folder's own config.ini: the file moa writes beside the run's env.json and checkpoints/.
bool IsRunFolderConfig(const std::string& config_path) {
  if (config_path.empty()) return false;
  const std::filesystem::path path(config_path);
  std::error_code error;
  return path.filename() == "config.ini" &&
         std::filesystem::is_regular_file(path.parent_path() / "env.json", error) &&
         std::filesystem::is_directory(path.parent_path() / "checkpoints", error);
}

// Cross-key rules that no single option can check.
// Also resolves the dataset-dependent defaults (-1 steps and checkpoint_freq).
absl::Status CheckConsistency(RunConfig& c, const std::string& origin) {
  auto bad = [&origin](const std::string& key, const std::string& why) {
    return absl::InvalidArgumentError(key + " " + why + origin);
  };
  MOA_ASSIGN_OR_RETURN(data::DatasetInfo info, data::LookupDataset(c.data.dataset));
  const int64_t n_env = static_cast<int64_t>(info.environments.size());
  if (c.train.steps == -1) c.train.steps = info.default_steps;
  if (c.train.checkpoint_freq == -1) c.train.checkpoint_freq = info.default_checkpoint_freq;
  // ImageFolder's environments are known once its folder is scanned (the trainer checks then).
  for (int64_t t : c.data.test_envs) {
    if (t < 0 || (n_env > 0 && t >= n_env)) {
      return bad("data.test_envs", "names environment " + std::to_string(t) + ", but " + info.name +
                                       " has environments 0 to " + std::to_string(n_env - 1));
    }
  }
  if (n_env > 1 && static_cast<int64_t>(c.data.test_envs.size()) >= n_env) {
    return bad("data.test_envs", "leaves no training environment");
  }
  if (c.parallel.dp > 0 && c.data.batch_size % (c.parallel.dp * c.parallel.ep) != 0) {
    return bad("data.batch_size", "= " + std::to_string(c.data.batch_size) +
                                      " does not divide among parallel.dp x parallel.ep = " +
                                      std::to_string(c.parallel.dp * c.parallel.ep) +
                                      " ranks (each takes a slice of every domain's minibatch)");
  }
  if (c.parallel.dp == 0 && c.data.batch_size % c.parallel.ep != 0) {
    return bad("data.batch_size", "= " + std::to_string(c.data.batch_size) +
                                      " does not divide among the parallel.ep = " +
                                      std::to_string(c.parallel.ep) + " expert-parallel ranks");
  }
  if (c.model.arch == "vit") {
    if (c.model.dim % c.model.heads != 0) {
      return bad("model.dim",
                 "= " + std::to_string(c.model.dim) +
                     " is not a multiple of model.heads = " + std::to_string(c.model.heads));
    }
    if (c.model.img_size % c.model.patch_size != 0) {
      return bad("model.img_size", "= " + std::to_string(c.model.img_size) +
                                       " is not a multiple of model.patch_size = " +
                                       std::to_string(c.model.patch_size));
    }
  } else if (c.adapter.method != "full") {
    return bad("adapter.method", "= " + c.adapter.method + " needs model.arch = vit");
  }
  // Kronecker adapters split each adapted Linear's in and out features into moa.phm_dim blocks.
  const bool kronecker = c.adapter.method == "kadaptation" ||
                         (c.adapter.method == "moa" && c.moa.expert == "kronecker");
  if (kronecker && c.model.arch == "vit") {
    MOA_ASSIGN_OR_RETURN(const std::vector<std::string> targets, SelectTargets(c.adapter.targets));
    const int64_t dim = c.model.dim;
    for (const std::string& target : targets) {
      const auto [in, out] = BlockLinearShape(target, dim, c.model.mlp_ratio);
      if (in % c.moa.phm_dim != 0 || out % c.moa.phm_dim != 0) {
        return bad("moa.phm_dim",
                   "= " + std::to_string(c.moa.phm_dim) + " must divide the in and out features " +
                       "of every adapted Linear, but " + target + " is " + std::to_string(in) +
                       " -> " + std::to_string(out) + " (model.dim = " + std::to_string(dim) + ")");
      }
    }
  }
  if (c.moa.ranks.empty()) return bad("moa.ranks", "is empty");
  for (int64_t r : c.moa.ranks) {
    if (r < 1) return bad("moa.ranks", "has rank " + std::to_string(r) + " (must be at least 1)");
  }
  if (c.moa.top_k > static_cast<int64_t>(c.moa.ranks.size())) {
    return bad("moa.top_k", "= " + std::to_string(c.moa.top_k) + " exceeds the " +
                                std::to_string(c.moa.ranks.size()) + " experts of moa.ranks");
  }
  if (c.parallel.ep > 1 && c.adapter.method != "moa") {
    return bad("parallel.ep", "= " + std::to_string(c.parallel.ep) +
                                  " shards MoA experts over ranks; it needs adapter.method = moa");
  }
  if (c.parallel.ep > 1 && (c.moa.dispatch == "dense" || c.moa.dispatch == "stacked")) {
    return bad("parallel.ep", "= " + std::to_string(c.parallel.ep) +
                                  " shards experts, but moa.dispatch = " + c.moa.dispatch +
                                  " runs every expert on every rank's tokens; use moa.dispatch = "
                                  "routed or auto");
  }
  if (c.adapter.method == "moa" && c.moa.dispatch == "stacked" && c.moa.expert != "lora") {
    return bad("moa.dispatch", "= stacked stacks LoRA experts' ranks; moa.expert = " +
                                   c.moa.expert + " needs moa.dispatch = routed, dense or auto");
  }
  if (c.parallel.ep > static_cast<int64_t>(c.moa.ranks.size())) {
    return bad("parallel.ep", "= " + std::to_string(c.parallel.ep) + " exceeds the " +
                                  std::to_string(c.moa.ranks.size()) +
                                  " experts of moa.ranks (every rank must hold one)");
  }
  if (!c.train.resume.empty() &&
      !std::filesystem::exists(c.train.resume + "/checkpoints/state.safetensors")) {
    return bad("train.resume", "= " + c.train.resume +
                                   " has no checkpoints/state.safetensors (a run directory that "
                                   "reached its first evaluation)");
  }
  // Last, so that a configuration missing its weights still hears of its other problems first.
  const absl::Status backbone = trainer::CheckBackboneChosen(c);
  if (!backbone.ok()) return absl::InvalidArgumentError(std::string(backbone.message()) + origin);
  return absl::OkStatus();
}

}  // namespace

LaunchConfig DefaultConfig() {
  LaunchConfig config;
  // A default must pass its own key's check (a struct default out of range is a programming
  // error, caught by every test that loads a configuration).
  for (const Option& option : OptionTable()) {
    LaunchConfig scratch;
    const std::string problem = option.parse(option.print(config), scratch);
    if (!problem.empty()) throw std::logic_error("default of " + option.name + ": " + problem);
  }
  config.run.resolved_ini = ToIni(config);
  return config;
}

std::pair<std::string, std::string> SplitOverride(const std::string& text) {
  std::string body = absl::StartsWith(text, "--") ? text.substr(2) : text;
  const size_t eq = body.find('=');
  if (eq == std::string::npos) return {body, ""};
  return {body.substr(0, eq), body.substr(eq + 1)};
}

namespace {

// LoadLaunchConfig on INI text from `file` (none: defaults only), which `origin` names in errors
// ("configuration file F", "the configuration stored in C"); `config_path` is the file's path, or
// empty.
absl::StatusOr<LaunchConfig> LoadFromStream(std::istream* file, const std::string& origin,
                                            const std::string& config_path,
                                            const std::vector<std::string>& overrides) {
  po::options_description description;
  for (const Option& option : OptionTable()) {
    description.add_options()(option.name.c_str(), po::value<std::string>(), option.help.c_str());
  }
  po::variables_map from_file;
  if (file != nullptr) {
    try {
      po::store(po::parse_config_file(*file, description, /*allow_unregistered=*/false), from_file);
    } catch (const po::error& e) {
      return absl::InvalidArgumentError(origin + ": " + e.what());
    }
  }
  // Overrides are split here rather than by Boost's command-line parser, which refuses an empty
  // value after '=' (`--data.test_envs=` clears the list).
  std::map<std::string, std::string> from_cli;
  for (const std::string& o : overrides) {
    const std::string text = absl::StartsWith(o, "--") ? o.substr(2) : o;
    const size_t eq = text.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError("command line: '" + o + "' is not --section.key=value");
    }
    const std::string key = text.substr(0, eq);
    if (description.find_nothrow(key, /*approx=*/false) == nullptr) {
      return absl::InvalidArgumentError("command line: unknown option --" + key);
    }
    from_cli[key] = text.substr(eq + 1);
  }

  LaunchConfig config = DefaultConfig();
  config.run.config_path = config_path;
  const std::string& origin_of_file = origin;
  for (const Option& option : OptionTable()) {
    std::string text, origin;
    if (from_cli.count(option.name)) {
      text = from_cli[option.name];
      origin = " (from the command line)";
    } else if (from_file.count(option.name)) {
      text = from_file[option.name].as<std::string>();
      origin = " (in " + (config_path.empty() ? origin_of_file : config_path) + ")";
    } else {
      continue;
    }
    const std::string problem = option.parse(text, config);
    if (!problem.empty()) return absl::InvalidArgumentError(option.name + ": " + problem + origin);
  }
  // Files are named from the folder the run starts in; config.ini keeps them absolute, so a run
  // resumes (and `moa report` reads it) from any folder.
  std::string& backbone = config.run.model.backbone;
  // The method must be the file's own: a pretraining run's folder (method full, no backbone) given
  // with --adapter.method=lora is refused like any other configuration without a backbone.
  if (backbone.empty() && !from_cli.count("model.backbone") && !from_cli.count("adapter.method") &&
      IsRunFolderConfig(config_path) && config.run.model.arch == "vit" &&
      config.run.adapter.method != "full") {
    // Before model.backbone = random existed, an empty value meant a random frozen backbone, and
    // moa now refuses to start such a run, so a run folder's empty value can only mean that.
    backbone = trainer::kRandomBackbone;
    if (parallel::LaunchedRank() == 0) {
      Log(LogLevel::kInfo) << config_path
                           << " was written before model.backbone = " << trainer::kRandomBackbone
                           << " existed; its empty model.backbone "
                           << "(a random frozen backbone then) is read as "
                           << trainer::kRandomBackbone;
    }
  }
  if (backbone != trainer::kRandomBackbone) backbone = AbsolutePath(backbone);
  config.run.data.data_dir = AbsolutePath(config.run.data.data_dir);
  MOA_RETURN_IF_ERROR(CheckConsistency(
      config.run,
      file == nullptr
          ? std::string()
          : " (" + (config_path.empty() ? origin : "configuration " + config_path) + ")"));
  config.run.resolved_ini = ToIni(config);
  return config;
}

}  // namespace

absl::StatusOr<LaunchConfig> LoadLaunchConfig(const std::string& config_path,
                                              const std::vector<std::string>& overrides) {
  if (config_path.empty()) return LoadFromStream(nullptr, "", "", overrides);
  if (std::filesystem::is_directory(config_path)) {
    return absl::InvalidArgumentError(
        "configuration file " + config_path + " is a folder (a run's configuration is " +
        config_path + "/config.ini; moa train --resume " + config_path + " continues the run)");
  }
  std::ifstream file(config_path);
  if (!file) return absl::NotFoundError("configuration file " + config_path + " cannot be opened");
  return LoadFromStream(&file, "configuration file " + config_path, config_path, overrides);
}

absl::StatusOr<LaunchConfig> LoadLaunchConfigText(const std::string& text,
                                                  const std::string& origin,
                                                  const std::vector<std::string>& overrides) {
  std::istringstream file(text);
  return LoadFromStream(&file, origin, "", overrides);
}

absl::StatusOr<RunConfig> LoadConfig(const std::string& config_path,
                                     const std::vector<std::string>& overrides) {
  MOA_ASSIGN_OR_RETURN(LaunchConfig config, LoadLaunchConfig(config_path, overrides));
  return std::move(config.run);
}

std::string OptionsHelp() {
  const LaunchConfig defaults;
  std::string text;
  std::string section;
  for (const Option& option : OptionTable()) {
    const std::string s = option.name.substr(0, option.name.find('.'));
    if (s != section) {
      section = s;
      text += "\n[" + section + "]\n";
    }
    const std::string default_text = option.print(defaults);
    char line[512];
    std::snprintf(line, sizeof(line), "  --%-24s %s (default: %s)\n", option.name.c_str(),
                  option.help.c_str(), default_text.empty() ? "\"\"" : default_text.c_str());
    text += line;
  }
  return text;
}

std::string ToIni(const LaunchConfig& config) {
  std::string text;
  std::string section;
  for (const Option& option : OptionTable()) {
    const size_t dot = option.name.find('.');
    const std::string s = option.name.substr(0, dot);
    if (s != section) {
      section = s;
      text += (text.empty() ? "[" : "\n[") + section + "]\n";
    }
    text += option.name.substr(dot + 1) + " = " + option.print(config) + "\n";
  }
  return text;
}

}  // namespace moa::launch
