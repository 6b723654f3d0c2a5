#include "launch/option_table.h"

#include <absl/strings/ascii.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_join.h>
#include <absl/strings/str_split.h>
#include <absl/strings/strip.h>

#include <cmath>
#include <sstream>

#include "data/dataset.h"

namespace moa::launch {
namespace {

// The shortest text of at least 10 significant digits that reads back as the same double:
// config.ini is read back on resume, and a learning rate rounded there would change the run.
std::string FormatDouble(double v) {
  std::string text;
  for (int precision = 10; precision <= 17; ++precision) {
    std::ostringstream out;
    out.precision(precision);
    out << v;
    text = out.str();
    double back = 0;
    if (absl::SimpleAtod(text, &back) && back == v) break;
  }
  return text;
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
  // config.ini could not hold these: '#' starts an INI comment, a line break ends the value.
  const absl::string_view value = absl::StripAsciiWhitespace(text);
  if (value.find_first_of("#\n\r") != absl::string_view::npos) {
    return "text without '#' or line breaks";
  }
  *out = std::string(value);
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
// Rank counts stay below 2^20, so that their products (parallel.dp x parallel.ep, slurm.nodes x
// slurm.ntasks_per_node) stay far inside int64.
constexpr int64_t kMostRanks = int64_t{1} << 20;
Check<int64_t> RankCount(int64_t low) {
  return [low](const int64_t& v) {
    return v >= low && v <= kMostRanks
               ? ""
               : "must lie in [" + PrintValue(low) + ", " + PrintValue(kMostRanks) + "]";
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

// Builds the table; each Add names a field of LaunchConfig through `field`, a generic lambda
// returning a reference to it.
class TableBuilder {
 public:
  template <typename T, typename Field>
  void Add(const std::string& name, Field field, const std::string& help,
           Check<T> check = Any<T>()) {
    Option option;
    option.name = name;
    option.help = help;
    option.parse = [field, check](const std::string& text, LaunchConfig& config) -> std::string {
      T value{};
      const std::string expected = ParseValue(text, &value);
      if (!expected.empty()) return "expected " + expected + ", got '" + text + "'";
      const std::string problem = check(value);
      if (!problem.empty()) return problem + ", got '" + text + "'";
      field(config) = value;
      return "";
    };
    option.print = [field](const LaunchConfig& config) { return PrintValue(field(config)); };
    options_.push_back(std::move(option));
  }
  std::vector<Option> Take() { return std::move(options_); }

 private:
  std::vector<Option> options_;
};

// "section.key" and the field of a run's section.
#define MOA_FIELD(section, key) \
#section "." #key, [](auto& c) -> auto& { return c.run.section.key; }
// "slurm.key" and the field of the [slurm] section.
#define MOA_SLURM_FIELD(key) \
  "slurm." #key, [](auto& c) -> auto& { return c.slurm.key; }

}  // namespace

// The single declaration of every option (docs/architecture.md, Configuration).
const std::vector<Option>& OptionTable() {
  static const std::vector<Option> table = [] {
    TableBuilder t;
    std::vector<std::string> datasets = data::KnownDatasets();
    // [data]
    t.Add<std::string>(MOA_FIELD(data, dataset), "dataset name, as DomainBed names it",
                       OneOf(datasets));
    t.Add<std::string>(MOA_FIELD(data, data_dir),
                       "folder holding the dataset (empty: Debian's Fashion-MNIST for the Fashion "
                       "datasets)");
    t.Add<std::string>(MOA_FIELD(data, source),
                       "which IDX images build the rotated domains: all (DomainBed), train, test",
                       OneOf({"all", "train", "test"}));
    t.Add<std::vector<int64_t>>(MOA_FIELD(data, test_envs),
                                "held-out test environments (indices, comma separated)");
    t.Add<double>(MOA_FIELD(data, holdout_fraction),
                  "fraction of each domain held out as its `out` split", InRange(0.0, 0.9));
    t.Add<int64_t>(MOA_FIELD(data, batch_size),
                   "minibatch size per training domain, global over data-parallel ranks",
                   AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(data, max_per_domain),
                   "keep at most this many samples per domain (0: all; for tests)",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(data, workers),
                   "image decoding threads per rank (0: the cores the compute threads leave, at "
                   "least 1; on a GPU, the rank's cores but one)",
                   AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_FIELD(data, check),
                       "image folders: how much of every image is verified before training: "
                       "none, header (format and size), full (decode every image)",
                       OneOf({"none", "header", "full"}));
    t.Add<bool>(MOA_FIELD(data, skip_corrupt),
                "image folders: leave out images that fail the check (counted in the log) "
                "instead of stopping with their names");
    // [model]
    t.Add<std::string>(MOA_FIELD(model, arch), "backbone: vit or mnist_cnn",
                       OneOf({"vit", "mnist_cnn"}));
    t.Add<int64_t>(MOA_FIELD(model, img_size), "input image size (pixels)", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(model, patch_size), "ViT patch size (pixels)", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(model, dim), "ViT width", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(model, depth), "ViT blocks", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(model, heads), "ViT attention heads", AtLeast<int64_t>(1));
    t.Add<double>(MOA_FIELD(model, mlp_ratio), "ViT MLP width / model width", Positive());
    t.Add<bool>(MOA_FIELD(model, norm_pre),
                "LayerNorm after the position embedding, no patch bias (CLIP)");
    t.Add<double>(MOA_FIELD(model, norm_eps), "LayerNorm epsilon (CLIP 1e-5, timm 1e-6)",
                  Positive());
    t.Add<std::string>(
        MOA_FIELD(model, backbone),
        "pretrained backbone weights (CLIP ViT-B/16: timm's or open_clip's safetensors, "
        "or a .bin/.pt pickle); random: a random initialisation; empty: random "
        "for adapter.method = full and mnist_cnn, refused otherwise");
    t.Add<int64_t>(MOA_FIELD(model, num_classes), "classes (0: the dataset's)",
                   AtLeast<int64_t>(0));
    // [adapter]
    t.Add<std::string>(MOA_FIELD(adapter, method),
                       "what trains: full, attention (qkv and proj), lora, kadaptation, moa",
                       OneOf({"full", "attention", "lora", "kadaptation", "moa"}));
    t.Add<int64_t>(MOA_FIELD(adapter, rank), "LoRA rank, or the Kronecker factors' rank",
                   AtLeast<int64_t>(1));
    t.Add<double>(MOA_FIELD(adapter, alpha),
                  "LoRA alpha: 0 scales the update by 1 (the reference), > 0 by alpha/rank (PEFT)",
                  AtLeast<double>(0.0));
    t.Add<std::string>(MOA_FIELD(adapter, blocks),
                       "blocks that get adapters: all, every_other, last:N, or a list like 0,2,5");
    t.Add<std::string>(MOA_FIELD(adapter, targets),
                       "Linears of a block that get adapters: qkv, proj, fc1, fc2 (comma list)");
    // [moa]
    t.Add<std::string>(MOA_FIELD(moa, expert), "expert kind: lora or kronecker",
                       OneOf({"lora", "kronecker"}));
    t.Add<std::vector<int64_t>>(MOA_FIELD(moa, ranks), "one expert per rank (comma list)");
    t.Add<int64_t>(MOA_FIELD(moa, top_k), "experts per token", AtLeast<int64_t>(1));
    t.Add<std::string>(MOA_FIELD(moa, router), "router: cosine or linear",
                       OneOf({"cosine", "linear"}));
    t.Add<int64_t>(MOA_FIELD(moa, proj_dim), "cosine router projection width", AtLeast<int64_t>(1));
    t.Add<bool>(MOA_FIELD(moa, noise),
                "Gaussian noise of std 1/experts on router logits in "
                "training");
    t.Add<bool>(MOA_FIELD(moa, renormalize),
                "gate = top-k probabilities / their sum (false: the raw noisy probability, as the "
                "reference)");
    t.Add<bool>(MOA_FIELD(moa, fp32_gate), "compute the router in float32");
    t.Add<double>(MOA_FIELD(moa, capacity_factor),
                  "expert capacity = ceil(factor x tokens x top_k / experts); 0: never drop",
                  AtLeast<double>(0.0));
    t.Add<bool>(MOA_FIELD(moa, aux_loss), "add the layers' load-balancing losses to the loss");
    t.Add<double>(MOA_FIELD(moa, aux_weight), "load-balancing coefficient, applied per layer",
                  AtLeast<double>(0.0));
    t.Add<std::string>(MOA_FIELD(moa, aux_type),
                       "importance_load (the reference's cv^2 loss) or switch",
                       OneOf({"importance_load", "switch"}));
    t.Add<std::string>(MOA_FIELD(moa, dispatch),
                       "auto (stacked for LoRA experts unless sharded, else routed), routed "
                       "(experts see only their tokens), stacked (LoRA experts: one GEMM for all "
                       "experts' ranks, masked by the gates) or dense (the reference's masked "
                       "computation)",
                       OneOf({"auto", "routed", "stacked", "dense"}));
    t.Add<int64_t>(MOA_FIELD(moa, phm_dim), "Kronecker rule size n (must divide in and out)",
                   AtLeast<int64_t>(1));
    t.Add<double>(MOA_FIELD(moa, kron_dropout),
                  "dropout on the Kronecker experts' update matrix in training",
                  InRange(0.0, 0.95));
    // [optim]
    t.Add<std::string>(MOA_FIELD(optim, optimizer), "adam or adamw", OneOf({"adam", "adamw"}));
    t.Add<double>(MOA_FIELD(optim, lr), "learning rate", Positive());
    t.Add<double>(MOA_FIELD(optim, weight_decay), "weight decay", AtLeast<double>(0.0));
    t.Add<bool>(MOA_FIELD(optim, fused),
                "one fused Adam/AdamW kernel for all tensors (false: one update per tensor)");
    // [train]
    t.Add<int64_t>(MOA_FIELD(train, steps),
                   "training steps (-1: the dataset's default, 5001; DomainNet 15001)",
                   DatasetDefaultOrAtLeastOne());
    t.Add<int64_t>(MOA_FIELD(train, checkpoint_freq),
                   "evaluate every this many steps and at the last (-1: the dataset's default, 200 "
                   "for DomainBed's image datasets, DomainNet 1000, 100 for the MNIST family)",
                   DatasetDefaultOrAtLeastOne());
    t.Add<int64_t>(MOA_FIELD(train, seed),
                   "seed of data streams, initialisation and the "
                   "rotated-domain permutation",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(train, trial_seed), "seed of the in/out splits", AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(train, hparams_seed),
                   "hyper-parameter draw (0: the configuration's values; N: moa train draws the "
                   "registered keys not given on the command line, as moa sweep's jobs of draw "
                   "N get them; moa sweep --help lists the ranges)",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_FIELD(train, threads),
                   "intra-op threads per rank (0: cores per node / ranks per node)",
                   AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_FIELD(train, resume),
                       "run directory to resume from its last full-state checkpoint (also: moa "
                       "train --resume DIR)");
    t.Add<bool>(MOA_FIELD(train, check_replicas),
                "after every step, verify that trainable parameters are identical on all ranks");
    t.Add<int64_t>(MOA_FIELD(train, log_every),
                   "print progress every this many steps (0: only "
                   "at evaluations)",
                   AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_FIELD(train, precision),
                       "fp32, or bf16 (autocast matrix products and attention to bfloat16; "
                       "trainable tensors and optimizer state stay fp32)",
                       OneOf({"fp32", "bf16"}));
    t.Add<bool>(MOA_FIELD(train, deterministic),
                "deterministic kernels on GPU (slower; makes GPU runs repeat exactly)");
    t.Add<int64_t>(MOA_FIELD(train, stop_grace),
                   "after SIGUSR1 or SIGTERM, seconds to finish the step and save the state "
                   "before the process ends anyway (0: no limit)",
                   AtLeast<int64_t>(0));
    // [eval]
    t.Add<std::string>(MOA_FIELD(eval, mode),
                       "full, or fast (skip the training domains' `in` splits)",
                       OneOf({"full", "fast"}));
    t.Add<int64_t>(MOA_FIELD(eval, batch_size), "evaluation batch size", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(eval, prefix_cache_mb),
                   "memory per rank (MB) for the outputs of the frozen blocks before the first "
                   "trained one, kept from one evaluation to the next (0: none)",
                   AtLeast<int64_t>(0));
    // [parallel]
    t.Add<int64_t>(MOA_FIELD(parallel, dp), "data-parallel ranks (0: world size / ep)",
                   RankCount(0));
    t.Add<int64_t>(MOA_FIELD(parallel, ep), "expert-parallel ranks", RankCount(1));
    t.Add<std::string>(MOA_FIELD(parallel, expert_mode), "auto, sharded or replicated",
                       OneOf({"auto", "sharded", "replicated"}));
    t.Add<double>(MOA_FIELD(parallel, link_gb_per_s),
                  "link rate (GB/s) the expert-mode planner assumes (0: measure at start-up)",
                  AtLeast<double>(0.0));
    t.Add<double>(MOA_FIELD(parallel, gflops),
                  "compute rate (GFLOP/s) the expert-mode planner assumes (0: measure at start-up)",
                  AtLeast<double>(0.0));
    t.Add<std::string>(MOA_FIELD(parallel, device),
                       "auto (a GPU when one is visible), cpu or cuda; rank r takes GPU local "
                       "rank % GPUs",
                       OneOf({"auto", "cpu", "cuda"}));
    t.Add<std::string>(MOA_FIELD(parallel, backend),
                       "collectives: auto (NCCL for GPU tensors when every rank has a GPU of "
                       "its own, else MPI), mpi or nccl",
                       OneOf({"auto", "mpi", "nccl"}));
    t.Add<double>(MOA_FIELD(parallel, bucket_mb),
                  "gradient all-reduce bucket size (MiB), overlapped with backward", Positive());
    // [swad]
    t.Add<bool>(MOA_FIELD(swad, enabled),
                "average the trainable weights over the loss valley (SWAD) and report it");
    t.Add<int64_t>(MOA_FIELD(swad, n_converge),
                   "evaluations without improvement that mark convergence", AtLeast<int64_t>(1));
    t.Add<int64_t>(MOA_FIELD(swad, n_tolerance),
                   "evaluations above the threshold that end the valley", AtLeast<int64_t>(1));
    t.Add<double>(MOA_FIELD(swad, tolerance_ratio),
                  "threshold = (1 + ratio) x mean loss at convergence", AtLeast<double>(0.0));
    t.Add<std::string>(
        MOA_FIELD(swad, rule),
        "paper (each segment once, steps weighted equally) or reference (the MoA/SWAD "
        "code's look-back and segment weighting)",
        OneOf({"paper", "reference"}));
    // [output]
    t.Add<std::string>(MOA_FIELD(output, dir), "run directory");
    t.Add<std::string>(MOA_FIELD(output, save), "adapter checkpoints to keep: none, selected, all",
                       OneOf({"none", "selected", "all"}));
    t.Add<bool>(MOA_FIELD(output, overwrite),
                "start afresh in an output.dir that holds a run (its results and checkpoints "
                "are removed); without it such a folder is refused unless resumed");
    t.Add<bool>(MOA_FIELD(output, tensorboard),
                "TensorBoard event files in output.dir/tb (rank 0): loss, learning rate, "
                "images/s, memory, every split's accuracy and loss, the selection criterion, "
                "router shares");
    // [slurm]
    t.Add<std::string>(MOA_SLURM_FIELD(partition),
                       "Slurm partition of sweep jobs (empty: the cluster's default)");
    t.Add<std::string>(MOA_SLURM_FIELD(account),
                       "Slurm account of sweep jobs (empty: the user's default)");
    t.Add<int64_t>(MOA_SLURM_FIELD(nodes), "nodes per sweep job", RankCount(1));
    t.Add<int64_t>(MOA_SLURM_FIELD(ntasks_per_node),
                   "moa processes (ranks) per node in a sweep job", RankCount(1));
    t.Add<int64_t>(MOA_SLURM_FIELD(gpus_per_task), "GPUs per rank (0: ask for none)",
                   AtLeast<int64_t>(0));
    t.Add<int64_t>(MOA_SLURM_FIELD(cpus_per_task), "CPUs per rank (0: the partition's default)",
                   AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_SLURM_FIELD(time),
                       "time limit per sweep job, as sbatch --time takes it (empty: the "
                       "partition's default)");
    t.Add<std::string>(MOA_SLURM_FIELD(mpi),
                       "srun --mpi plugin that starts the ranks (`srun --mpi=list` shows them)");
    t.Add<int64_t>(MOA_SLURM_FIELD(max_running), "most array tasks running at once (0: no limit)",
                   AtLeast<int64_t>(0));
    t.Add<std::string>(MOA_SLURM_FIELD(job_name), "Slurm job name of the sweep");
    t.Add<std::string>(MOA_SLURM_FIELD(signal),
                       "sbatch --signal: the warning sent to the tasks before the time limit, "
                       "SIG@SECONDS (empty: none); the task saves its state and is requeued");
    return t.Take();
  }();
  return table;
}

#undef MOA_FIELD
#undef MOA_SLURM_FIELD

const Option* FindOption(const std::string& name) {
  for (const Option& option : OptionTable()) {
    if (option.name == name) return &option;
  }
  return nullptr;
}

}  // namespace moa::launch
