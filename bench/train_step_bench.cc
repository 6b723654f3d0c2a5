// Times one training step (forward, backward, Adam on the trainable parameters) of each given
// configuration's model on a batch of its shape, in the same run, and prints the ratio to the
// first. For the first configuration it also times the same model and batch in PyTorch eager
// (the same torch, from scripts/setup.sh's environment, with timm; LoRA configurations) with the
// same thread count.
//
// usage: train_step_bench [--config A.ini --config B.ini ...] [--batch PER_DOMAIN] [--steps N]
//                         [--threads T] [--profile 1]
//   --profile 1 also prints where each configuration's step time goes (bench/step_profile.h).
//   default: configs/rfmnist_lora.ini and configs/rfmnist_lora_moa.ini, the demo's batch.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/bench_paths.h"
#include "bench/step_profile.h"
#include "common/threads.h"
#include "common/timer.h"
#include "data/dataset.h"
#include "launch/options.h"
#include "moa/peft.h"
#include "trainer/trainer.h"

namespace {

struct Measured {
  std::string config;
  int64_t batch = 0;
  double ms = 0;
};

// Returns ms per step, or a negative value after printing an error.
Measured TimeConfig(const std::string& path, int64_t per_domain, int steps, bool profile) {
  Measured m;
  m.config = path;
  std::vector<std::string> overrides = {"model.backbone=random"};
  if (per_domain > 0) overrides.push_back("data.batch_size=" + std::to_string(per_domain));
  auto config = moa::launch::LoadConfig(path, overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    m.ms = -1;
    return m;
  }
  auto info = moa::data::LookupDataset(config->data.dataset);
  auto routing = std::make_shared<moa::RoutingContext>();
  auto model = moa::trainer::BuildModel(*config, *info, routing);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    m.ms = -1;
    return m;
  }
  const int64_t domains =
      static_cast<int64_t>(info->environments.size() - config->data.test_envs.size());
  m.batch = config->data.batch_size * domains;
  torch::manual_seed(0);
  const int64_t size = config->model.img_size;
  const torch::Tensor x = torch::rand({m.batch, info->channels, size, size});
  const torch::Tensor y = torch::randint(0, info->num_classes, {m.batch}, torch::kInt64);
  std::vector<torch::Tensor> params;
  for (auto& [name, p] : moa::TrainableParameters(**model)) params.push_back(p);
  torch::optim::Adam optimizer(params, torch::optim::AdamOptions(1e-3));
  (*model)->train();
  int64_t step = 0;
  auto train_step = [&] {
    routing->step = step++;
    torch::Tensor loss = torch::nn::functional::cross_entropy((*model)->forward(x), y);
    if (config->moa.aux_loss) loss = loss + moa::AuxiliaryLoss(**model);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  };
  train_step();
  moa::Stopwatch clock;
  for (int i = 0; i < steps; ++i) train_step();
  m.ms = clock.Seconds() / steps * 1000;
  if (profile) {
    moa::bench::PrintStepProfile(
        path.substr(path.rfind('/') + 1),
        [&](const std::function<void(const char*)>& phase) {
          routing->step = step++;
          phase("forward");
          torch::Tensor loss = torch::nn::functional::cross_entropy((*model)->forward(x), y);
          if (config->moa.aux_loss) loss = loss + moa::AuxiliaryLoss(**model);
          optimizer.zero_grad();
          phase("backward");
          loss.backward();
          phase("optimizer");
          optimizer.step();
          phase("");
        },
        steps);
  }
  return m;
}

double TorchMs(const std::string& path, int64_t per_domain, int steps, int threads) {
  std::vector<std::string> overrides = {"model.backbone=random"};
  if (per_domain > 0) overrides.push_back("data.batch_size=" + std::to_string(per_domain));
  auto config = moa::launch::LoadConfig(path, overrides);
  if (!config.ok() || config->adapter.method != "lora") return -1;
  auto info = moa::data::LookupDataset(config->data.dataset);
  const int64_t batch =
      config->data.batch_size *
      static_cast<int64_t>(info->environments.size() - config->data.test_envs.size());
  const auto& m = config->model;
  char command[1024];
  std::snprintf(command, sizeof(command),
                "%s %s/bench/torch_train_step.py %d %lld %lld %lld %lld %lld %lld "
                "%g %lld %s %d %lld",
                moa::bench::PythonPath().c_str(), moa::bench::SourceDir().c_str(), threads,
                static_cast<long long>(batch), static_cast<long long>(m.img_size),
                static_cast<long long>(m.patch_size), static_cast<long long>(m.dim),
                static_cast<long long>(m.depth), static_cast<long long>(m.heads), m.mlp_ratio,
                static_cast<long long>(config->adapter.rank), config->adapter.targets.c_str(),
                steps, static_cast<long long>(info->channels));
  FILE* pipe = popen(command, "r");
  double ms = -1;
  if (pipe == nullptr || std::fscanf(pipe, "%lf", &ms) != 1) ms = -1;
  if (pipe) pclose(pipe);
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> configs;
  int64_t per_domain = 0;
  int steps = 10, threads = 2;
  bool profile = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--config") configs.push_back(argv[i + 1]);
    if (flag == "--batch") per_domain = std::atoll(argv[i + 1]);
    if (flag == "--steps") steps = std::atoi(argv[i + 1]);
    if (flag == "--threads") threads = std::atoi(argv[i + 1]);
    if (flag == "--profile") profile = std::string(argv[i + 1]) == "1";
  }
  if (configs.empty()) {
    configs = {moa::bench::SourceDir() + "/configs/rfmnist_lora.ini",
               moa::bench::SourceDir() + "/configs/rfmnist_lora_moa.ini"};
  }
  moa::ApplyThreadCount(threads);
  std::vector<Measured> rows;
  for (const std::string& c : configs) {
    rows.push_back(TimeConfig(c, per_domain, steps, profile));
    if (rows.back().ms < 0) return 2;
  }
  const double torch_ms = TorchMs(configs[0], per_domain, steps, threads);
  std::printf("training step (forward, backward, Adam), %d threads, %d timed steps\n", threads,
              steps);
  std::printf("%-44s %6s %10s %10s %10s\n", "configuration", "batch", "ms/step", "images/s",
              "ratio");
  for (const Measured& m : rows) {
    std::printf("%-44s %6lld %10.1f %10.0f %9.2fx\n",
                m.config.substr(m.config.rfind('/') + 1).c_str(), static_cast<long long>(m.batch),
                m.ms, m.batch / m.ms * 1000, m.ms / rows[0].ms);
  }
  if (torch_ms > 0) {
    std::printf("%-44s %6lld %10.1f %10.0f %9.2fx\n", "PyTorch eager + timm, first configuration",
                static_cast<long long>(rows[0].batch), torch_ms, rows[0].batch / torch_ms * 1000,
                torch_ms / rows[0].ms);
    std::printf("moa is %.2fx the speed of PyTorch eager on the first configuration\n",
                torch_ms / rows[0].ms);
  } else {
    std::printf(
        "(no PyTorch eager baseline: the first configuration is not a LoRA one, or it failed)\n");
  }
  return 0;
}
