// Times one training step (forward, backward, Adam) of a configuration's model and batch --
// by default the demo's LoRA run: 5 training domains x 32 images of 28x28 -- against the same
// model and batch in PyTorch eager (Debian's python3-torch with timm), with the same thread
// count, measured in the same run, and prints the ratio.
//
// usage: train_step_bench [--config configs/demo_lora.ini] [--steps N] [--threads T]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/threads.h"
#include "common/timer.h"
#include "data/dataset.h"
#include "launch/options.h"
#include "moa/peft.h"
#include "trainer/trainer.h"

int main(int argc, char** argv) {
  std::string config_path = std::string(MOA_SOURCE_DIR) + "/configs/demo_lora.ini";
  int steps = 20, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--config") config_path = argv[i + 1];
    if (flag == "--steps") steps = std::atoi(argv[i + 1]);
    if (flag == "--threads") threads = std::atoi(argv[i + 1]);
  }
  auto config = moa::launch::LoadConfig(config_path, {"model.backbone="});
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  moa::ApplyThreadCount(threads);
  auto info = moa::data::LookupDataset(config->data.dataset);
  auto model = moa::trainer::BuildModel(*config, *info);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 2;
  }
  const int64_t train_domains =
      static_cast<int64_t>(info->environments.size() - config->data.test_envs.size());
  const int64_t batch = config->data.batch_size * train_domains;
  torch::manual_seed(0);
  const torch::Tensor x =
      torch::rand({batch, info->channels, config->model.img_size, config->model.img_size});
  const torch::Tensor y = torch::randint(0, info->num_classes, {batch}, torch::kInt64);
  std::vector<torch::Tensor> params;
  for (auto& [name, p] : moa::TrainableParameters(**model)) params.push_back(p);
  torch::optim::Adam optimizer(params, torch::optim::AdamOptions(1e-3));
  (*model)->train();
  auto step = [&] {
    torch::Tensor loss = torch::nn::functional::cross_entropy((*model)->forward(x), y);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  };
  for (int i = 0; i < 3; ++i) step();
  moa::Stopwatch clock;
  for (int i = 0; i < steps; ++i) step();
  const double moa_ms = clock.Seconds() / steps * 1000;

  const auto& m = config->model;
  char command[1024];
  std::snprintf(command, sizeof(command),
                "%s %s/bench/torch_train_step.py %d %lld %lld %lld %lld %lld %lld %g %lld %s %d",
                (std::string(MOA_SOURCE_DIR) + "/.venv/bin/python").c_str(), MOA_SOURCE_DIR,
                threads, static_cast<long long>(batch), static_cast<long long>(m.img_size),
                static_cast<long long>(m.patch_size), static_cast<long long>(m.dim),
                static_cast<long long>(m.depth), static_cast<long long>(m.heads), m.mlp_ratio,
                static_cast<long long>(config->adapter.rank), config->adapter.targets.c_str(),
                steps);
  FILE* pipe = popen(command, "r");
  double torch_ms = -1;
  if (pipe == nullptr || std::fscanf(pipe, "%lf", &torch_ms) != 1) torch_ms = -1;
  if (pipe) pclose(pipe);

  std::printf("train step: %s, batch %lld, %d threads, %d timed steps\n", config_path.c_str(),
              static_cast<long long>(batch), threads, steps);
  std::printf("%-22s %10s %12s\n", "implementation", "ms/step", "images/s");
  std::printf("%-22s %10.2f %12.0f\n", "moa (LibTorch)", moa_ms, batch / moa_ms * 1000);
  if (torch_ms <= 0) {
    std::printf("PyTorch eager baseline failed to run: %s\n", command);
    return 1;
  }
  std::printf("%-22s %10.2f %12.0f\n", "PyTorch eager + timm", torch_ms, batch / torch_ms * 1000);
  std::printf("ratio PyTorch / moa: %.2fx (above 1: moa is faster)\n", torch_ms / moa_ms);
  return 0;
}
