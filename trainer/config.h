// The configuration of a run, one struct per INI section, each member holding its documented
// default (docs/architecture.md, Configuration); launch/option_table.cc adds names, help and
// checks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moa/moa_layer.h"
#include "moa/peft.h"

namespace moa::trainer {

struct DataConfig {
  std::string dataset = "RotatedFashionMNIST";
  std::string data_dir;        // empty: Debian's Fashion-MNIST for the Fashion datasets
  std::string source = "all";  // all (DomainBed), train or test IDX images
  std::vector<int64_t> test_envs = {0};
  double holdout_fraction = 0.2;
  int64_t batch_size = 32;     // per training domain, global over data-parallel ranks
  int64_t max_per_domain = 0;  // 0: all samples
  int64_t workers = 0;  // decoding threads per rank; 0: ResolveDataWorkers (common/threads.h)
  std::string check = "header";  // none, header or full
  bool skip_corrupt = false;
};

struct ModelConfig {
  std::string arch = "vit";  // vit or mnist_cnn
  int64_t img_size = 224;
  int64_t patch_size = 16;
  int64_t dim = 768;
  int64_t depth = 12;
  int64_t heads = 12;
  double mlp_ratio = 4.0;
  bool norm_pre = true;  // CLIP's LayerNorm after the position embedding
  double norm_eps = 1e-5;
  std::string backbone;     // weights file; "random": random init; empty: only for full/mnist_cnn
  int64_t num_classes = 0;  // 0: the dataset's
};

/// The [adapter] section is the model library's PEFT description itself.
using AdapterConfig = moa::PeftOptions;

struct OptimConfig {
  std::string optimizer = "adam";  // adam or adamw
  double lr = 5e-5;
  double weight_decay = 0;
  bool fused = true;  // ATen's fused Adam/AdamW kernel (false: torch::optim's per-tensor update)
};

struct TrainConfig {
  int64_t steps = -1;            // -1: the dataset's default (LoadConfig resolves it)
  int64_t checkpoint_freq = -1;  // -1: the dataset's default (LoadConfig resolves it)
  int64_t seed = 0;
  int64_t trial_seed = 0;
  int64_t hparams_seed = 0;
  int64_t threads = 0;  // 0: cores per node / ranks per node
  std::string resume;
  bool check_replicas = false;
  int64_t log_every = 50;
  std::string precision = "fp32";  // fp32 or bf16 (autocast; trainable tensors stay fp32)
  bool deterministic = false;      // deterministic kernels (GPU scatter included)
  /// After SIGUSR1/SIGTERM: seconds to finish the step and save the state before the process
  /// ends anyway (0: no limit).
  int64_t stop_grace = 300;
};

struct EvalConfig {
  std::string mode = "full";  // full or fast
  int64_t batch_size = 128;
  int64_t prefix_cache_mb = 1024;  // per rank; 0: recompute the frozen prefix every evaluation
};

struct ParallelConfig {
  int64_t dp = 0;  // 0: world size / ep
  int64_t ep = 1;
  std::string expert_mode = "auto";  // auto, sharded or replicated
  double link_gb_per_s = 0;          // the planner's link rate (0: measured at start-up)
  double gflops = 0;                 // the planner's compute rate (0: measured at start-up)
  std::string device = "auto";       // auto, cpu or cuda
  std::string backend = "auto";      // auto, mpi or nccl
  double bucket_mb = 4.0;
};

struct SwadConfig {
  bool enabled = false;
  int64_t n_converge = 3;
  int64_t n_tolerance = 6;
  double tolerance_ratio = 0.3;
  std::string rule = "paper";  // paper or reference
};

struct OutputConfig {
  std::string dir = "runs/run";
  std::string save = "selected";  // none, selected or all
  bool overwrite = false;         // start afresh in a folder that holds a run
  bool tensorboard = true;        // event files in output.dir/tb
};

struct RunConfig {
  DataConfig data;
  ModelConfig model;
  AdapterConfig adapter;
  moa::MoaConfig moa;
  OptimConfig optim;
  TrainConfig train;
  EvalConfig eval;
  ParallelConfig parallel;
  SwadConfig swad;
  OutputConfig output;
  /// The file the configuration was read from (for messages); empty when none.
  std::string config_path;
  /// The resolved configuration as INI text, written to config.ini.
  std::string resolved_ini;
};

}  // namespace moa::trainer
