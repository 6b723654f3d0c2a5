// One training step of ViT-B/16 (CLIP layout, 224 x 224) with LoRA r=2 (configs/vitb16_lora.ini),
// LoRA-MoA (the paper's configuration, configs/vitb16_lora_moa.ini) and full fine-tuning
// (configs/vitb16_full.ini), on a GPU or the CPU, in fp32 or bf16, against the same step in
// PyTorch eager as a PEFT user runs it (bench/torch_vit_step.py: timm with SDPA, frozen backbone,
// the same adapters in PyTorch, autocast, fused Adam) on the same torch, in the same run. Prints
// step time, images/s, peak memory (allocator peak on GPU, peak RSS on CPU) and model FLOPs
// utilisation (the step's counted FLOPs over the H200's dense peak for the precision).
// Every measurement runs in a process of its own, so peaks do not leak from one row to the next.
//
// usage: vit_step_bench [--device cuda|cpu] [--precision bf16|fp32] [--batch PER_DOMAIN]
//                       [--domains 3] [--steps 10] [--warmup 3] [--threads N]
//                       [--methods lora,moa,full] [--small] [--max-batch] [--no-torch]
//   --small: width 192, depth 4, 3 heads (the CPU figures); --max-batch: also the largest
//   per-domain batch that fits (doubling from --batch; GPU only).
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/threads.h"
#include "common/timer.h"
#include "data/dataset.h"
#include "launch/options.h"
#include "moa/autocast.h"
#include "moa/peft.h"
#include "parallel/device.h"
#include "trainer/optimizer.h"
#include "trainer/trainer.h"

extern char** environ;

namespace {

struct Args {
  std::string device = "cuda", precision = "bf16", methods = "lora,moa,full";
  int64_t batch = 32, domains = 3, steps = 10, warmup = 3, threads = 0;
  bool small = false, max_batch = false, torch = true;
  std::string child;  // run one measurement of this method and print JSON
};

const std::map<std::string, std::string> kConfigs = {{"lora", "configs/vitb16_lora.ini"},
                                                     {"moa", "configs/vitb16_lora_moa.ini"},
                                                     {"full", "configs/vitb16_full.ini"}};

std::vector<std::string> Overrides(const Args& a, int64_t batch) {
  std::vector<std::string> o = {"data.batch_size=" + std::to_string(batch),
                                "model.backbone=random"};
  if (a.small) {
    o.insert(o.end(), {"model.dim=192", "model.depth=4", "model.heads=3", "moa.proj_dim=64"});
  }
  return o;
}

// FLOPs of one image's forward pass: patch embedding, per block the qkv, attention (scores and
// weighted sum), projection and MLP products, and the head; 2 FLOPs per multiply-add.
double ForwardFlops(const moa::trainer::RunConfig& c, int64_t classes) {
  const double dim = c.model.dim, grid = c.model.img_size / c.model.patch_size;
  const double n = grid * grid + 1, hidden = dim * c.model.mlp_ratio;
  const double patch = 2.0 * grid * grid * 3 * c.model.patch_size * c.model.patch_size * dim;
  const double block = 2.0 * n * dim * 3 * dim + 2.0 * 2 * n * n * dim + 2.0 * n * dim * dim +
                       2.0 * 2 * n * dim * hidden;
  return patch + c.model.depth * block + 2.0 * dim * classes;
}

// The step's counted FLOPs per image: full fine-tuning needs forward, input and weight gradients
// (3 x forward); a frozen backbone needs forward and input gradients (2 x forward), adapters add
// little. This is the FLOP count the configuration needs, not what an implementation launches.
double StepFlopsPerImage(const moa::trainer::RunConfig& c, int64_t classes) {
  return (c.adapter.method == "full" ? 3.0 : 2.0) * ForwardFlops(c, classes);
}

// H200 dense peaks (TFLOP/s): bf16 989; fp32 without TF32 67.
double PeakFlops(const std::string& precision) { return precision == "bf16" ? 989e12 : 67e12; }

void Synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// One measurement in this process; prints {"ms", "images_per_s", "peak_mem_gb", "flops"}.
int Child(const Args& a) {
  if (a.threads > 0) moa::ApplyThreadCount(static_cast<int>(a.threads));
  auto config = moa::launch::LoadConfig(std::string(MOA_SOURCE_DIR) + "/" + kConfigs.at(a.child),
                                        Overrides(a, a.batch));
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  auto info = moa::data::LookupDataset(config->data.dataset);
  auto routing = std::make_shared<moa::RoutingContext>();
  auto model = moa::trainer::BuildModel(*config, *info, routing);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const torch::Device device(a.device == "cuda" ? torch::kCUDA : torch::kCPU);
  moa::parallel::SetKernelPolicy(/*allow_tf32=*/a.precision != "fp32", /*deterministic=*/false);
  (*model)->to(device);
  const int64_t images = a.batch * a.domains;
  torch::manual_seed(0);
  const torch::Tensor x = torch::rand({images, 3, 224, 224}).to(device);
  const torch::Tensor y = torch::randint(0, info->num_classes, {images}, torch::kInt64).to(device);
  std::vector<torch::Tensor> params;
  for (auto& [name, p] : moa::TrainableParameters(**model)) params.push_back(p);
  auto optimizer = moa::trainer::MakeOptimizer(config->optim, params);
  (*model)->train();
  routing->global_batch = images;
  int64_t step = 0;
  const bool bf16 = a.precision == "bf16";
  auto train_step = [&] {
    routing->step = step++;
    torch::Tensor logits;
    {
      moa::AutocastScope autocast(device, bf16);
      logits = (*model)->forward(x);
    }
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat32), y);
    if (config->adapter.method == "moa" && config->moa.aux_loss)
      loss = loss + moa::AuxiliaryLoss(**model);
    optimizer->zero_grad();
    loss.backward();
    moa::trainer::StepOptimizer(*optimizer, /*fused=*/true, torch::Tensor());
  };
  try {
    for (int64_t i = 0; i < a.warmup; ++i) train_step();
    Synchronize(device);
    moa::parallel::ResetPeakMemory(device);
    moa::Stopwatch clock;
    for (int64_t i = 0; i < a.steps; ++i) train_step();
    Synchronize(device);
    const double seconds = clock.Seconds() / static_cast<double>(a.steps);
    nlohmann::json out;
    out["ms"] = seconds * 1000;
    out["images_per_s"] = static_cast<double>(images) / seconds;
    out["peak_mem_gb"] = static_cast<double>(moa::parallel::PeakMemoryBytes(device)) / (1 << 30);
    out["flops"] = StepFlopsPerImage(*config, info->num_classes) * static_cast<double>(images);
    std::printf("%s\n", out.dump().c_str());
  } catch (const c10::OutOfMemoryError&) {
    std::printf("{\"oom\": true}\n");
  }
  return 0;
}

// Runs `argv` and returns the last line of its standard output parsed as JSON (null on failure).
nlohmann::json RunJson(const std::vector<std::string>& argv) {
  int out[2];
  if (pipe(out) != 0) return nullptr;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  std::vector<char*> args;
  for (const std::string& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = read(out[0], buffer, sizeof(buffer))) > 0) text.append(buffer, n);
  close(out[0]);
  if (rc != 0) return nullptr;
  int status = 0;
  waitpid(pid, &status, 0);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const size_t line = text.rfind('\n');
  try {
    return nlohmann::json::parse(line == std::string::npos ? text : text.substr(line + 1));
  } catch (const nlohmann::json::exception&) {
    return nullptr;
  }
}

std::vector<std::string> MoaCommand(const char* self, const Args& a, const std::string& method,
                                    int64_t batch) {
  return {self,
          "--child",
          method,
          "--device",
          a.device,
          "--precision",
          a.precision,
          "--batch",
          std::to_string(batch),
          "--domains",
          std::to_string(a.domains),
          "--steps",
          std::to_string(a.steps),
          "--warmup",
          std::to_string(a.warmup),
          "--threads",
          std::to_string(a.threads),
          a.small ? "--small" : "--full-size"};
}

std::vector<std::string> TorchCommand(const Args& a, const std::string& method, int64_t batch) {
  const bool lora = method == "lora";
  std::vector<std::string> c = {
      MOA_PYTHON,    std::string(MOA_SOURCE_DIR) + "/bench/torch_vit_step.py",
      "--method",    method,
      "--device",    a.device,
      "--precision", a.precision,
      "--batch",     std::to_string(batch * a.domains),
      "--steps",     std::to_string(a.steps),
      "--warmup",    std::to_string(a.warmup),
      "--threads",   std::to_string(a.threads),
      "--targets",   lora ? "qkv,proj" : "qkv",
      "--blocks",    method == "moa" ? "every_other" : "all",
      "--rank",      "2"};
  if (a.small) {
    c.insert(c.end(), {"--dim", "192", "--depth", "4", "--heads", "3"});
  }
  return c;
}

void PrintRow(const Args& a, const std::string& label, int64_t batch, const nlohmann::json& m,
              const nlohmann::json& t) {
  auto number = [](const nlohmann::json& j, const char* key) {
    return j.is_object() && j.contains(key) ? j[key].get<double>() : -1.0;
  };
  const double ms = number(m, "ms"), rate = number(m, "images_per_s"),
               mem = number(m, "peak_mem_gb"), flops = number(m, "flops");
  const double t_ms = number(t, "ms"), t_rate = number(t, "images_per_s"),
               t_mem = number(t, "peak_mem_gb");
  char mfu[16] = "-";
  if (a.device == "cuda" && ms > 0) {
    std::snprintf(mfu, sizeof(mfu), "%.1f%%", 100.0 * flops / (ms / 1000) / PeakFlops(a.precision));
  }
  char speed[16] = "-";
  if (rate > 0 && t_rate > 0) std::snprintf(speed, sizeof(speed), "%.2fx", rate / t_rate);
  std::printf(
      "| %-9s | %-4s | %5lld | %8.1f | %8.1f | %6.2f | %6s | %8.1f | %8.1f | %6.2f | %6s |\n",
      label.c_str(), a.precision.c_str(), static_cast<long long>(batch * a.domains), ms, rate, mem,
      mfu, t_ms, t_rate, t_mem, speed);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", flag.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--device")
      a.device = value();
    else if (flag == "--precision")
      a.precision = value();
    else if (flag == "--batch")
      a.batch = std::stoll(value());
    else if (flag == "--domains")
      a.domains = std::stoll(value());
    else if (flag == "--steps")
      a.steps = std::stoll(value());
    else if (flag == "--warmup")
      a.warmup = std::stoll(value());
    else if (flag == "--threads")
      a.threads = std::stoll(value());
    else if (flag == "--methods")
      a.methods = value();
    else if (flag == "--child")
      a.child = value();
    else if (flag == "--small")
      a.small = true;
    else if (flag == "--full-size")
      a.small = false;
    else if (flag == "--max-batch")
      a.max_batch = true;
    else if (flag == "--no-torch")
      a.torch = false;
    else {
      std::fprintf(stderr, "unknown option %s (see the header of bench/vit_step_bench.cc)\n",
                   flag.c_str());
      return 2;
    }
  }
  if (a.device == "cuda" && moa::parallel::VisibleGpus() == 0) {
    std::fprintf(stderr, "vit_step_bench: no GPU visible; use --device cpu (with --small)\n");
    return 1;
  }
  if (!a.child.empty()) return Child(a);

  std::printf(
      "ViT %s, %s, %s, %lld training domains; moa vs PyTorch eager (timm + PyTorch "
      "adapters, same torch)\n",
      a.small ? "width 192 depth 4 (small)" : "B/16", a.device.c_str(), a.precision.c_str(),
      static_cast<long long>(a.domains));
  std::printf(
      "| method    | prec | batch |  moa ms  | moa im/s | moa GB |  MFU   | torch ms | torch im/s "
      "| torch GB | moa/torch |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::map<std::string, double> rate_of;
  std::string methods = a.methods;
  size_t start = 0;
  while (start <= methods.size()) {
    const size_t comma = methods.find(',', start);
    const std::string method = methods.substr(start, comma - start);
    start = comma == std::string::npos ? methods.size() + 1 : comma + 1;
    if (!kConfigs.count(method)) {
      std::fprintf(stderr, "unknown method %s (lora, moa, full)\n", method.c_str());
      return 2;
    }
    const nlohmann::json m = RunJson(MoaCommand(argv[0], a, method, a.batch));
    const nlohmann::json t = a.torch ? RunJson(TorchCommand(a, method, a.batch)) : nlohmann::json();
    PrintRow(a, method, a.batch, m, t);
    if (m.is_object() && m.contains("images_per_s")) rate_of[method] = m["images_per_s"];
    if (a.max_batch && a.device == "cuda") {
      int64_t fits = 0;
      nlohmann::json best;
      for (int64_t b = a.batch * 2; b <= 4096; b *= 2) {
        const nlohmann::json probe = RunJson(MoaCommand(argv[0], a, method, b));
        if (!probe.is_object() || probe.contains("oom")) break;
        fits = b;
        best = probe;
      }
      if (fits > 0) {
        const nlohmann::json tb =
            a.torch ? RunJson(TorchCommand(a, method, fits)) : nlohmann::json();
        PrintRow(a, method + " max", fits, best, tb);
      }
    }
  }
  if (rate_of.count("lora") && rate_of.count("moa")) {
    std::printf("LoRA-MoA step / LoRA step: %.2fx\n", rate_of["lora"] / rate_of["moa"]);
  }
  return 0;
}
