// The resolved configuration of a run, one struct per INI section (docs/architecture.md,
// Configuration). The option declarations (names, defaults, help, checks) live in
// launch/options.cc; this header is only the data the trainer consumes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moa/moa_layer.h"
#include "moa/peft.h"

namespace moa::trainer {

struct DataConfig {
  std::string dataset;
  std::string data_dir;
  std::string source;
  std::vector<int64_t> test_envs;
  double holdout_fraction = 0;
  int64_t batch_size = 0;
  int64_t max_per_domain = 0;
  int64_t workers = 0;
  std::string check;
  bool skip_corrupt = false;
};

struct ModelConfig {
  std::string arch;
  int64_t img_size = 0;
  int64_t patch_size = 0;
  int64_t dim = 0;
  int64_t depth = 0;
  int64_t heads = 0;
  double mlp_ratio = 0;
  bool norm_pre = false;
  double norm_eps = 0;
  std::string backbone;
  int64_t num_classes = 0;
};

/// The [adapter] section is the model library's PEFT description itself.
using AdapterConfig = moa::PeftOptions;

struct OptimConfig {
  std::string optimizer;
  double lr = 0;
  double weight_decay = 0;
  bool fused = true;  // ATen's fused Adam/AdamW kernel (false: torch::optim's per-tensor update)
};

struct TrainConfig {
  int64_t steps = 0;
  int64_t checkpoint_freq = 0;
  int64_t seed = 0;
  int64_t trial_seed = 0;
  int64_t hparams_seed = 0;
  int64_t threads = 0;
  std::string resume;
  bool check_replicas = false;
  int64_t log_every = 0;
  std::string precision;       // fp32 or bf16 (autocast; trainable tensors stay fp32)
  bool deterministic = false;  // deterministic kernels (GPU scatter included)
};

struct EvalConfig {
  std::string mode;
  int64_t batch_size = 0;
};

struct ParallelConfig {
  int64_t dp = 0;
  int64_t ep = 0;
  std::string expert_mode;
  double link_gb_per_s = 0;  // the planner's link rate (0: measured at start-up)
  double gflops = 0;         // the planner's compute rate (0: measured at start-up)
  std::string device;        // auto, cpu or cuda
  std::string backend;       // auto, mpi or nccl
  double bucket_mb = 0;
};

struct SwadConfig {
  bool enabled = false;
  int64_t n_converge = 0;
  int64_t n_tolerance = 0;
  double tolerance_ratio = 0;
  std::string rule;
};

struct OutputConfig {
  std::string dir;
  std::string save;
};

/// How `moa sweep --launcher slurm` asks Slurm for resources; training ignores it.
struct SlurmConfig {
  std::string partition;
  std::string account;
  int64_t nodes = 0;
  int64_t ntasks_per_node = 0;
  int64_t gpus_per_task = 0;
  int64_t cpus_per_task = 0;
  std::string time;
  std::string mpi;
  int64_t max_running = 0;
  std::string job_name;
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
  SlurmConfig slurm;
  /// The file the configuration was read from (for messages); empty when none.
  std::string config_path;
  /// The resolved configuration as INI text, written to config.ini.
  std::string resolved_ini;
};

}  // namespace moa::trainer
