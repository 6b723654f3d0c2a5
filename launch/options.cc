#include "launch/options.h"

#include <absl/strings/ascii.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>
#include <absl/strings/strip.h>

#include <boost/program_options.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "common/status_macros.h"
#include "data/dataset.h"

namespace moa::launch {
namespace po = boost::program_options;
using trainer::RunConfig;

namespace {

// One declared option: how to parse a value into the config, print it back, and check it.
struct Option {
  std::string name;  // section.key
  std::string default_text;
  std::string help;
  // Parses `text` into the config; returns an error message (empty when ok).
  std::function<std::string(const std::string& text, RunConfig& config)> parse;
  std::function<std::string(const RunConfig& config)> print;
};

std::string FormatDouble(double v) {
  std::ostringstream out;
  out.precision(10);
  out << v;
  return out.str();
}

// Typed parsers. Each returns "" on success, else what was expected.
std::string ParseValue(const std::string& text, int64_t* out) {
  return absl::SimpleAtoi(absl::StripAsciiWhitespace(text), out) ? "" : "an integer";
}
std::string ParseValue(const std::string& text, double* out) {
  return absl::SimpleAtod(absl::StripAsciiWhitespace(text), out) && std::isfinite(*out)
             ? ""
             : "a number";
}
std::string ParseValue(const std::string& text, bool* out) {
  const std::string v = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (v == "true" || v == "1" || v == "yes" || v == "on") {
    *out = true;
  } else if (v == "false" || v == "0" || v == "no" || v == "off") {
    *out = false;
  } else {
    return "true or false";
  }
  return "";
}
std::string ParseValue(const std::string& text, std::string* out) {
  *out = std::string(absl::StripAsciiWhitespace(text));
  return "";
}
std::string ParseValue(const std::string& text, std::vector<int64_t>* out) {
  out->clear();
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t v;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &v))
      return "a comma-separated list of integers";
    out->push_back(v);
  }
  return "";
}

std::string PrintValue(int64_t v) { return std::to_string(v); }
std::string PrintValue(double v) { return FormatDouble(v); }
std::string PrintValue(bool v) { return v ? "true" : "false"; }
std::string PrintValue(const std::string& v) { return v; }
std::string PrintValue(const std::vector<int64_t>& v) { return absl::StrJoin(v, ","); }

// Checks: return "" when the value is acceptable, else the requirement.
template <typename T>
using Check = std::function<std::string(const T&)>;

template <typename T>
Check<T> AtLeast(T low) {
  return [low](const T& v) { return v >= low ? "" : "must be at least " + PrintValue(low); };
}
Check<double> Positive() {
  return [](const double& v) { return v > 0 ? "" : std::string("must be positive"); };
}
Check<double> InRange(double low, double high) {
  return [=](const double& v) {
    return v >= low && v <= high
               ? ""
               : "must lie in [" + FormatDouble(low) + ", " + FormatDouble(high) + "]";
  };
}
Check<std::string> OneOf(std::vector<std::string> allowed) {
  return [allowed](const std::string& v) {
    for (const std::string& a : allowed) {
      if (v == a) return std::string();
    }
    return "must be one of " + absl::StrJoin(allowed, ", ");
  };
}
Check<int64_t> DatasetDefaultOrAtLeastOne() {
  return [](const int64_t& v) {
    return v == -1 || v >= 1 ? "" : std::string("must be -1 (the dataset's default) or at least 1");
  };
}
template <typename T>
Check<T> Any() {
  return [](const T&) { return std::string(); };
}

class OptionTable {
 public:
  template <typename T>
  void Add(const std::string& name, std::function<T&(RunConfig&)> field, T default_value,
           const std::string& help, Check<T> check = Any<T>()) {
    Option option;
    option.name = name;
    option.default_text = PrintValue(default_value);
    option.help = help;
    option.parse = [field, check](const std::string& text, RunConfig& config) -> std::string {
      T value{};
      const std::string expected = ParseValue(text, &value);
      if (!expected.empty()) return "expected " + expected + ", got '" + text + "'";
      const std::string problem = check(value);
      if (!problem.empty()) return problem + ", got '" + text + "'";
      field(config) = value;
      return "";
    };
    option.print = [field](const RunConfig& config) {
      return PrintValue(field(const_cast<RunConfig&>(config)));
    };
    options_.push_back(std::move(option));
  }
  const std::vector<Option>& options() const { return options_; }

 private:
  std::vector<Option> options_;
};

#define MOA_FIELD(section, key) \
#section "." #key, [](RunConfig & c) -> decltype(c.section.key)& { return c.section.key; }

// The single declaration of every option (docs/architecture.md, Configuration).
const OptionTable& Table() {
  static const OptionTable table = [] {
    OptionTable t;
    std::vector<std::string> datasets = data::KnownDatasets();
    // [data]
    t.Add<std::string>(MOA_FIELD(data, dataset), "RotatedFashionMNIST",
                       "dataset name, as DomainBed names it", OneOf(datasets));
    t.Add<std::string>(MOA_FIELD(data, data_dir), "",
                       "folder holding the dataset (empty: Debian's Fashion-MNIST for the Fashion "
                       "datasets)");
    t.Add<std::string>(MOA_FIELD(data, source), "all",
                       "which IDX images build the rotated domains: all (DomainBed), train, test",
                       OneOf({"all", "train", "test"}));
    t.Add<std::vector<int64_t>>(MOA_FIELD(data, test_envs), std::vector<int64_t>{0},
                                "held-out test environments (indices, comma separated)");
    t.Add<double>(MOA_FIELD(data, holdout_fraction), 0.2,
                  "fraction of each domain held out as its `out` split", InRange(0.0, 0.9));
    t.Add<int64_t>(MOA_FIELD(data, batch_size), 32,
                   "minibatch size per training domain, global over data-parallel ranks",
                   AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(data, max_per_domain), 0,
                   "keep at most this many samples per domain (0: all; for tests)",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(data, workers), 2, "data preparation threads per rank",
                   AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_FIELD(data, check), "header",
                       "image folders: how much of every image is verified before training: "
                       "none, header (format and size), full (decode every image)",
                       OneOf({"none", "header", "full"}));
    t.Add<bool>(MOA_FIELD(data, skip_corrupt), false,
                "image folders: leave out images that fail the check (counted in the log) "
                "instead of stopping with their names");
    // [model]
    t.Add<std::string>(MOA_FIELD(model, arch), "vit", "backbone: vit or mnist_cnn",
                       OneOf({"vit", "mnist_cnn"}));
    t.Add<int64_t>(MOA_FIELD(model, img_size), 224, "input image size (pixels)",
                   AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(model, patch_size), 16, "ViT patch size (pixels)",
                   AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(model, dim), 768, "ViT width", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(model, depth), 12, "ViT blocks", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(model, heads), 12, "ViT attention heads", AtLeast<int64_t>(1));
    t.Add<double>(MOA_FIELD(model, mlp_ratio), 4.0, "ViT MLP width / model width", Positive());
    t.Add<bool>(MOA_FIELD(model, norm_pre), true,
                "LayerNorm after the position embedding, no patch bias (CLIP)");
    t.Add<double>(MOA_FIELD(model, norm_eps), 1e-5, "LayerNorm epsilon (CLIP 1e-5, timm 1e-6)",
                  Positive());
    t.Add<std::string>(MOA_FIELD(model, backbone), "",
                       "pretrained backbone safetensors (timm names); empty: random init");
    t.Add<int64_t>(MOA_FIELD(model, num_classes), 0, "classes (0: the dataset's)",
                   AtLeast<int64_t>(0));
    // [adapter]
    t.Add<std::string>(MOA_FIELD(adapter, method), "lora",
                       "what trains: full, attention (qkv and proj), lora, kadaptation, moa",
                       OneOf({"full", "attention", "lora", "kadaptation", "moa"}));
    t.Add<int64_t>(MOA_FIELD(adapter, rank), 2, "LoRA rank, or the Kronecker factors' rank",
                   AtLeast<int64_t>(1));
    t.Add<double>(MOA_FIELD(adapter, alpha), 0.0,
                  "LoRA alpha: 0 scales the update by 1 (the reference), > 0 by alpha/rank (PEFT)",
                  AtLeast<double>(0.0));
    t.Add<std::string>(MOA_FIELD(adapter, blocks), "all",
                       "blocks that get adapters: all, every_other, last:N, or a list like 0,2,5");
    t.Add<std::string>(MOA_FIELD(adapter, targets), "qkv,proj",
                       "Linears of a block that get adapters: qkv, proj, fc1, fc2 (comma list)");
    // [moa]
    t.Add<std::string>(MOA_FIELD(moa, expert), "lora", "expert kind: lora or kronecker",
                       OneOf({"lora", "kronecker"}));
    t.Add<std::vector<int64_t>>(MOA_FIELD(moa, ranks), std::vector<int64_t>{1, 2, 4, 8},
                                "one expert per rank (comma list)");
    t.Add<int64_t>(MOA_FIELD(moa, top_k), 1, "experts per token", AtLeast<int64_t>(1));
    t.Add<std::string>(MOA_FIELD(moa, router), "cosine", "router: cosine or linear",
                       OneOf({"cosine", "linear"}));
    t.Add<int64_t>(MOA_FIELD(moa, proj_dim), 256, "cosine router projection width",
                   AtLeast<int64_t>(1));
    t.Add<bool>(MOA_FIELD(moa, noise), true,
                "Gaussian noise of std 1/experts on router logits in "
                "training");
    t.Add<bool>(MOA_FIELD(moa, renormalize), false,
                "gate = top-k probabilities / their sum (false: the raw noisy probability, as the "
                "reference)");
    t.Add<bool>(MOA_FIELD(moa, fp32_gate), false, "compute the router in float32");
    t.Add<double>(MOA_FIELD(moa, capacity_factor), 0.0,
                  "expert capacity = ceil(factor x tokens x top_k / experts); 0: never drop",
                  AtLeast<double>(0.0));
    t.Add<bool>(MOA_FIELD(moa, aux_loss), false,
                "add the layers' load-balancing losses to the loss");
    t.Add<double>(MOA_FIELD(moa, aux_weight), 0.01, "load-balancing coefficient, applied per layer",
                  AtLeast<double>(0.0));
    t.Add<std::string>(MOA_FIELD(moa, aux_type), "importance_load",
                       "importance_load (the reference's cv^2 loss) or switch",
                       OneOf({"importance_load", "switch"}));
    t.Add<std::string>(MOA_FIELD(moa, dispatch), "routed",
                       "routed (experts see only their tokens) or dense (the reference's masked "
                       "computation)",
                       OneOf({"routed", "dense"}));
    t.Add<int64_t>(MOA_FIELD(moa, phm_dim), 64, "Kronecker rule size n (must divide in and out)",
                   AtLeast<int64_t>(1));
    t.Add<double>(MOA_FIELD(moa, kron_dropout), 0.5,
                  "dropout on the Kronecker experts' update matrix in training",
                  InRange(0.0, 0.95));
    // [optim]
    t.Add<std::string>(MOA_FIELD(optim, optimizer), "adam", "adam or adamw",
                       OneOf({"adam", "adamw"}));
    t.Add<double>(MOA_FIELD(optim, lr), 5e-5, "learning rate", Positive());
    t.Add<double>(MOA_FIELD(optim, weight_decay), 0.0, "weight decay", AtLeast<double>(0.0));
    t.Add<bool>(MOA_FIELD(optim, fused), true,
                "one fused Adam/AdamW kernel for all tensors (false: one update per tensor)");
    // [train]
    t.Add<int64_t>(MOA_FIELD(train, steps), -1,
                   "training steps (-1: the dataset's default, 5001; DomainNet 15001)",
                   DatasetDefaultOrAtLeastOne());
    t.Add<int64_t>(MOA_FIELD(train, checkpoint_freq), -1,
                   "evaluate every this many steps and at the last (-1: the dataset's default, 200 "
                   "for DomainBed's image datasets, DomainNet 1000, 100 for the MNIST family)",
                   DatasetDefaultOrAtLeastOne());
    t.Add<int64_t>(MOA_FIELD(train, seed), 0,
                   "seed of data streams, initialisation and the "
                   "rotated-domain permutation",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(train, trial_seed), 0, "seed of the in/out splits",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(train, hparams_seed), 0, "hyper-parameter draw (0: defaults)",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(train, threads), 0,
                   "intra-op threads per rank (0: cores per node / ranks per node)",
                   AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_FIELD(train, resume), "",
                       "run directory to resume from its last full-state checkpoint (also: moa "
                       "train --resume DIR)");
    t.Add<bool>(MOA_FIELD(train, check_replicas), false,
                "after every step, verify that trainable parameters are identical on all ranks");
    t.Add<int64_t>(MOA_FIELD(train, log_every), 50,
                   "print progress every this many steps (0: only "
                   "at evaluations)",
                   AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_FIELD(train, precision), "fp32",
                       "fp32, or bf16 (autocast matrix products and attention to bfloat16; "
                       "trainable tensors and optimizer state stay fp32)",
                       OneOf({"fp32", "bf16"}));
    t.Add<bool>(MOA_FIELD(train, deterministic), false,
                "deterministic kernels on GPU (slower; makes GPU runs repeat exactly)");
    // [eval]
    t.Add<std::string>(MOA_FIELD(eval, mode), "full",
                       "full, or fast (skip the training domains' `in` splits)",
                       OneOf({"full", "fast"}));
    t.Add<int64_t>(MOA_FIELD(eval, batch_size), 128, "evaluation batch size", AtLeast<int64_t>(1));
    // [parallel]
    t.Add<int64_t>(MOA_FIELD(parallel, dp), 0, "data-parallel ranks (0: world size / ep)",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(parallel, ep), 1, "expert-parallel ranks", AtLeast<int64_t>(1));
    t.Add<std::string>(MOA_FIELD(parallel, expert_mode), "auto", "auto, sharded or replicated",
                       OneOf({"auto", "sharded", "replicated"}));
    t.Add<double>(MOA_FIELD(parallel, link_gb_per_s), 0.0,
                  "link rate (GB/s) the expert-mode planner assumes (0: measure at start-up)",
                  AtLeast<double>(0.0));
    t.Add<double>(MOA_FIELD(parallel, gflops), 0.0,
                  "compute rate (GFLOP/s) the expert-mode planner assumes (0: measure at start-up)",
                  AtLeast<double>(0.0));
    t.Add<std::string>(MOA_FIELD(parallel, device), "auto",
                       "auto (a GPU when one is visible), cpu or cuda; rank r takes GPU local "
                       "rank % GPUs",
                       OneOf({"auto", "cpu", "cuda"}));
    t.Add<std::string>(MOA_FIELD(parallel, backend), "auto",
                       "collectives: auto (NCCL for GPU tensors when every rank has a GPU of "
                       "its own, else MPI), mpi or nccl",
                       OneOf({"auto", "mpi", "nccl"}));
    t.Add<double>(MOA_FIELD(parallel, bucket_mb), 4.0,
                  "gradient all-reduce bucket size (MiB), overlapped with backward", Positive());
    // [swad]
    t.Add<bool>(MOA_FIELD(swad, enabled), false,
                "average the trainable weights over the loss valley (SWAD) and report it");
    t.Add<int64_t>(MOA_FIELD(swad, n_converge), 3,
                   "evaluations without improvement that mark convergence", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(swad, n_tolerance), 6,
                   "evaluations above the threshold that end the valley", AtLeast<int64_t>(1));
    t.Add<double>(MOA_FIELD(swad, tolerance_ratio), 0.3,
                  "threshold = (1 + ratio) x mean loss at convergence", AtLeast<double>(0.0));
    t.Add<std::string>(
        MOA_FIELD(swad, rule), "paper",
        "paper (each segment once, steps weighted equally) or reference (the MoA/SWAD "
        "code's look-back and segment weighting)",
        OneOf({"paper", "reference"}));
    // [output]
    t.Add<std::string>(MOA_FIELD(output, dir), "runs/run", "run directory");
    t.Add<std::string>(MOA_FIELD(output, save), "selected",
                       "adapter checkpoints to keep: none, selected, all",
                       OneOf({"none", "selected", "all"}));
    // [slurm]
    t.Add<std::string>(MOA_FIELD(slurm, partition), "",
                       "Slurm partition of sweep jobs (empty: the cluster's default)");
    t.Add<std::string>(MOA_FIELD(slurm, account), "",
                       "Slurm account of sweep jobs (empty: the user's default)");
    t.Add<int64_t>(MOA_FIELD(slurm, nodes), 1, "nodes per sweep job", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(slurm, ntasks_per_node), 1,
                   "moa processes (ranks) per node in a sweep job", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(slurm, gpus_per_task), 0, "GPUs per rank (0: ask for none)",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(slurm, cpus_per_task), 0, "CPUs per rank (0: the partition's default)",
                   AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_FIELD(slurm, time), "",
                       "time limit per sweep job, as sbatch --time takes it (empty: the "
                       "partition's default)");
    t.Add<std::string>(MOA_FIELD(slurm, mpi), "pmix",
                       "srun --mpi plugin that starts the ranks (`srun --mpi=list` shows them)");
    t.Add<int64_t>(MOA_FIELD(slurm, max_running), 0,
                   "most array tasks running at once (0: no limit)", AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_FIELD(slurm, job_name), "moa-sweep", "Slurm job name of the sweep");
    return t;
  }();
  return table;
}

#undef MOA_FIELD

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
  if (c.parallel.ep > 1 && c.moa.dispatch == "dense") {
    return bad("parallel.ep", "= " + std::to_string(c.parallel.ep) +
                                  " shards experts, but moa.dispatch = dense runs every expert on "
                                  "every rank's tokens; use moa.dispatch = routed");
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
  return absl::OkStatus();
}

}  // namespace

RunConfig DefaultConfig() {
  RunConfig config;
  for (const Option& option : Table().options()) {
    const std::string problem = option.parse(option.default_text, config);
    if (!problem.empty()) throw std::logic_error("default of " + option.name + ": " + problem);
  }
  config.resolved_ini = ToIni(config);
  return config;
}

absl::StatusOr<RunConfig> LoadConfig(const std::string& config_path,
                                     const std::vector<std::string>& overrides) {
  po::options_description description;
  for (const Option& option : Table().options()) {
    description.add_options()(option.name.c_str(), po::value<std::string>(), option.help.c_str());
  }
  po::variables_map from_file;
  if (!config_path.empty()) {
    std::ifstream file(config_path);
    if (!file)
      return absl::NotFoundError("configuration file " + config_path + " cannot be opened");
    try {
      po::store(po::parse_config_file(file, description, /*allow_unregistered=*/false), from_file);
    } catch (const po::error& e) {
      return absl::InvalidArgumentError("configuration file " + config_path + ": " + e.what());
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

  RunConfig config = DefaultConfig();
  config.config_path = config_path;
  for (const Option& option : Table().options()) {
    std::string text, origin;
    if (from_cli.count(option.name)) {
      text = from_cli[option.name];
      origin = " (from the command line)";
    } else if (from_file.count(option.name)) {
      text = from_file[option.name].as<std::string>();
      origin = " (in " + config_path + ")";
    } else {
      continue;
    }
    const std::string problem = option.parse(text, config);
    if (!problem.empty()) return absl::InvalidArgumentError(option.name + ": " + problem + origin);
  }
  MOA_RETURN_IF_ERROR(CheckConsistency(
      config, config_path.empty() ? std::string() : " (configuration " + config_path + ")"));
  config.resolved_ini = ToIni(config);
  return config;
}

std::string OptionsHelp() {
  std::string text;
  std::string section;
  for (const Option& option : Table().options()) {
    const std::string s = option.name.substr(0, option.name.find('.'));
    if (s != section) {
      section = s;
      text += "\n[" + section + "]\n";
    }
    char line[512];
    std::snprintf(line, sizeof(line), "  --%-24s %s (default: %s)\n", option.name.c_str(),
                  option.help.c_str(),
                  option.default_text.empty() ? "\"\"" : option.default_text.c_str());
    text += line;
  }
  return text;
}

std::string ToIni(const RunConfig& config) {
  std::string text;
  std::string section;
  for (const Option& option : Table().options()) {
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
