// One training step of ViT-B/16 (CLIP layout, 224 x 224) with LoRA r=2 (configs/vitb16_lora.ini),
// LoRA-MoA (the paper's configuration, configs/vitb16_lora_moa.ini) and full fine-tuning
// (configs/vitb16_full.ini), on a GPU or the CPU, in fp32 or bf16, against the same step in
// PyTorch eager as a PEFT user runs it (bench/torch_vit_step.py: timm with SDPA, frozen backbone,
// the same adapters in PyTorch, autocast, fused Adam) on the same torch, in the same run. Prints
// step time, images/s, peak memory (allocator peak on GPU, peak RSS on CPU) and model FLOPs
// utilisation (the step's counted FLOPs over the GPU's dense peak for the precision: the H100 or
// H200 SXM, H200 NVL or H100 PCIe, told by its name), and moa's
// evaluation images/s (eval mode, no autograd; the first batch, cold, in brackets) against its
// training images/s.
// Every measurement runs in a process of its own, so peaks do not leak from one row to the next.
//
// `--suite cpu` runs, in one go, every configuration of the CPU comparison: the demo's small LoRA
// and LoRA-MoA (configs/rfmnist_lora*.ini, 5 x 32 images of 28 x 28), ViT-B/16 LoRA and LoRA-MoA
// at --batch per domain (default 2), and DomainBed's ERM with MNIST_CNN (5 x 64 images; its twin
// is DomainBed's network and ERM step written here), each with its PyTorch eager twin and the
// ratio of step times, then the LoRA-MoA / LoRA step ratios. --repeat N (the suite's default 3)
// runs moa and PyTorch N times each, taking turns, and keeps each side's fastest run. Last come
// ViT-B/16 LoRA rows at 8 images per domain against PyTorch with glibc's malloc and with tcmalloc
// preloaded (moa links tcmalloc; CMakeLists.txt).
//
// usage: vit_step_bench [--device cuda|cpu] [--precision bf16|fp32] [--batch PER_DOMAIN]
//                       [--domains 3] [--steps 10] [--warmup 3] [--threads N]
//                       [--methods lora,moa,full] [--small] [--max-batch | --max-batch-only]
//                       [--no-torch] [--suite cpu] [--repeat N] [--trace DIR]
//   --small: width 192, depth 4, 3 heads (the CPU figures); --max-batch: also the largest
//   per-domain batch that fits for moa (two-step probes doubling from twice --batch, then a full
//   measurement there, PyTorch eager at the same batch; GPU only); --max-batch-only: only those
//   rows. Methods: lora, moa, full (ViT-B/16, or the small width), small_lora, small_moa (the
//   demo's), erm (MNIST_CNN).
//   --trace DIR: after each measurement (not the probes), both sides profile two more steps with
//   Kineto (CPU and, on a GPU, CUDA activities) and write a Chrome trace to
//   DIR/{moa,torch}_<method>_<images>.json (with --repeat, the last run's; not for the suite's
//   allocator rows); bench/trace_kernels.py sums their GPU kernels by kind.
#include <spawn.h>
#include <sys/wait.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/bench_paths.h"
#include "common/error.h"
#include "common/threads.h"
#include "common/timer.h"
#include "data/dataset.h"
#include "launch/options.h"
#include "moa/adapters.h"
#include "moa/autocast.h"
#include "moa/moa_layer.h"
#include "moa/models.h"
#include "moa/peft.h"
#include "parallel/device.h"
#include "trainer/optimizer.h"
#include "trainer/trainer.h"

extern char** environ;

namespace {

struct Args {
  std::string device = "cuda", precision = "bf16", methods = "lora,moa,full";
  int64_t batch = 32, domains = 3, steps = 10, warmup = 3, threads = 0, repeat = 1;
  bool small = false, max_batch = false, max_batch_only = false, torch = true;
  bool probe = false;  // a child that only tries whether the batch fits (two steps, no evaluation)
  std::string child;   // run one measurement of this method and print JSON
  std::string trace;   // folder for Kineto traces of two extra steps per measurement
};

const std::map<std::string, std::string> kConfigs = {
    {"lora", "configs/vitb16_lora.ini"},           {"moa", "configs/vitb16_lora_moa.ini"},
    {"full", "configs/vitb16_full.ini"},           {"small_lora", "configs/rfmnist_lora.ini"},
    {"small_moa", "configs/rfmnist_lora_moa.ini"}, {"erm", "configs/rfmnist_full.ini"}};

// The demo's configurations and ERM keep their own batch (DomainBed's 64 for ERM); the ViT-B/16
// ones take --batch.
bool OwnBatch(const std::string& method) {
  return method.rfind("small_", 0) == 0 || method == "erm";
}

std::vector<std::string> Overrides(const Args& a, const std::string& method, int64_t batch) {
  std::vector<std::string> o = {"model.backbone=random"};
  if (!OwnBatch(method)) o.push_back("data.batch_size=" + std::to_string(batch));
  if (method == "erm") {
    o.insert(o.end(), {"model.arch=mnist_cnn", "data.batch_size=64", "optim.lr=1e-3"});
  }
  if (a.small && !OwnBatch(method)) {
    o.insert(o.end(), {"model.dim=192", "model.depth=4", "model.heads=3", "moa.proj_dim=64"});
  }
  return o;
}

// FLOPs of one image's forward pass through the weight products: patch embedding, per block the
// qkv, projection and MLP products, and the head; 2 FLOPs per multiply-add.
double WeightForwardFlops(const moa::trainer::RunConfig& c, int64_t classes) {
  const double dim = c.model.dim, grid = c.model.img_size / c.model.patch_size;
  const double n = grid * grid + 1;
  const double patch = 2.0 * grid * grid * 3 * c.model.patch_size * c.model.patch_size * dim;
  double block = 0;
  for (const char* linear : {"qkv", "proj", "fc1", "fc2"}) {
    const moa::LinearShape shape = moa::BlockLinearShape(linear, c.model.dim, c.model.mlp_ratio);
    block += 2.0 * n * static_cast<double>(shape.in) * static_cast<double>(shape.out);
  }
  return patch + c.model.depth * block + 2.0 * dim * classes;
}

// The attention's own products per image, forward: scores Q K^T and the weighted sum P V.
double AttentionForwardFlops(const moa::trainer::RunConfig& c) {
  const double grid = c.model.img_size / c.model.patch_size, n = grid * grid + 1;
  return c.model.depth * 2.0 * 2 * n * n * c.model.dim;
}

// The step's counted FLOPs per image: the weight products need forward, input and weight gradients
// in full fine-tuning (3 x forward) and forward and input gradients with a frozen backbone
// (2 x forward); the attention's products have no weights, and their backward (dQ, dK, dV and dP)
// is twice their forward either way (3 x). Adapters add little. This is the FLOP count the
// configuration needs, not what an implementation launches.
double StepFlopsPerImage(const moa::trainer::RunConfig& c, int64_t classes) {
  return (c.adapter.method == "full" ? 3.0 : 2.0) * WeightForwardFlops(c, classes) +
         3.0 * AttentionForwardFlops(c);
}

// The adapters' FLOPs per image, forward, from the built model: a LoRA of rank r on an in -> out
// Linear costs 2 r (in + out) per token; a MoA layer its router's projection and similarity
// (2 in P + 2 P E) plus every expert's ranks stacked (2 (r1 + ... + rE) (in + out)): moa's
// stacked computation's count, every expert on every token (routing alone would need one expert
// per token). A training step needs 3 times that (forward, input and weight gradients).
double AdapterFlopsPerImage(torch::nn::Module& model, const moa::trainer::RunConfig& c) {
  const double grid = c.model.img_size / c.model.patch_size, tokens = grid * grid + 1;
  double flops = 0;
  for (const auto& module : model.modules()) {
    auto* linear = dynamic_cast<moa::AdaptableLinearImpl*>(module.get());
    if (linear == nullptr || !linear->adapter()) continue;
    const double in = linear->options().in_features(), out = linear->options().out_features();
    if (auto* lora = dynamic_cast<moa::LoraImpl*>(linear->adapter().get())) {
      flops += 2.0 * lora->options().rank() * (in + out);
    } else if (auto* mix = dynamic_cast<moa::MoaAdapterImpl*>(linear->adapter().get())) {
      const double projected = mix->router->proj->options.out_features();
      double ranks = 0;
      for (int64_t r : mix->config().ranks) ranks += static_cast<double>(r);
      flops +=
          2.0 * in * projected + 2.0 * projected * mix->num_experts() + 2.0 * ranks * (in + out);
    }
  }
  return tokens * flops;
}

// Dense peaks (FLOP/s) of the GPU the MFU is counted against, from its name: the SXM H100 and
// H200 (bf16 989 T, fp32 without TF32 67 T), the H200 NVL (835 T, 60 T) and the PCIe H100
// (756 T, 51 T); other GPUs are counted against the SXM figures, which the header says.
struct Peak {
  std::string card;
  double bf16, fp32;
};
Peak PeakOf(const std::string& gpu_name) {
  if (gpu_name.find("NVL") != std::string::npos) return {"H200 NVL", 835e12, 60e12};
  if (gpu_name.find("PCIe") != std::string::npos) return {"H100 PCIe", 756e12, 51e12};
  return {"H100/H200 SXM", 989e12, 67e12};
}
Peak g_peak = PeakOf("");
double PeakFlops(const std::string& precision) {
  return precision == "bf16" ? g_peak.bf16 : g_peak.fp32;
}

void Synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Two more training steps under Kineto (CPU, and CUDA where the step runs on a GPU), written as
// a Chrome trace to `path`. A trace that fails (out of memory, an unwritable file) is a warning on
// stderr: the measurement it follows still counts.
void WriteTrace(const std::string& path, const torch::Device& device,
                const std::function<void()>& train_step) {
  namespace prof = torch::autograd::profiler;
  try {
    const prof::ProfilerConfig config(prof::ProfilerState::KINETO, false, false);
    std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
    if (device.is_cuda()) activities.insert(prof::ActivityType::CUDA);
    prof::prepareProfiler(config, activities);
    prof::enableProfiler(config, activities);
    try {
      train_step();
      train_step();
      Synchronize(device);
    } catch (...) {
      prof::disableProfiler();
      throw;
    }
    // Kineto only logs a file it cannot write (an older one of the name would hide that).
    std::filesystem::remove(path);
    prof::disableProfiler()->save(path);
    if (!std::filesystem::exists(path)) throw std::runtime_error("no file was written");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit_step_bench: no trace %s: %s\n", path.c_str(),
                 moa::ExceptionMessage(e).c_str());
  }
}

// One measurement in this process; prints {"ms", "images_per_s", "peak_mem_gb", "flops"}.
int Child(const Args& a) {
  if (a.threads > 0) moa::ApplyThreadCount(static_cast<int>(a.threads));
  auto config = moa::launch::LoadConfig(moa::bench::SourceDir() + "/" + kConfigs.at(a.child),
                                        Overrides(a, a.child, a.batch));
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
  // GPU 0 (with an index: the allocator's statistics need one).
  const torch::Device device = a.device == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::kCPU;
  moa::parallel::SetKernelPolicy(/*allow_tf32=*/a.precision != "fp32", /*deterministic=*/false);
  const int64_t domains =
      static_cast<int64_t>(info->environments.size() - config->data.test_envs.size());
  const int64_t images = config->data.batch_size * domains;
  const int64_t size = config->model.img_size;
  const bool bf16 = a.precision == "bf16";
  try {
    (*model)->to(device);
    torch::manual_seed(0);
    // Drawn where they are used: a large batch made on the host would take seconds to copy.
    const torch::Tensor x =
        torch::rand({images, info->channels, size, size}, torch::TensorOptions().device(device));
    const torch::Tensor y =
        torch::randint(0, info->num_classes, {images}, torch::dtype(torch::kInt64).device(device));
    std::vector<torch::Tensor> params;
    for (auto& [name, p] : moa::TrainableParameters(**model)) params.push_back(p);
    auto optimizer = moa::trainer::MakeOptimizer(config->optim, params);
    (*model)->train();
    routing->global_batch = images;
    int64_t step = 0;
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
    if (a.probe) {
      // Whether the batch fits: two steps (the optimizer's moments exist from the first).
      train_step();
      train_step();
      Synchronize(device);
      std::printf("{\"fits\": true, \"images\": %lld}\n", static_cast<long long>(images));
      return 0;
    }
    for (int64_t i = 0; i < a.warmup; ++i) train_step();
    Synchronize(device);
    moa::parallel::ResetPeakMemory(device);
    moa::Stopwatch clock;
    for (int64_t i = 0; i < a.steps; ++i) train_step();
    Synchronize(device);
    const double seconds = clock.Seconds() / static_cast<double>(a.steps);
    const double peak_gb = static_cast<double>(moa::parallel::PeakMemoryBytes(device)) / (1 << 30);
    if (!a.trace.empty()) {
      WriteTrace(a.trace + "/moa_" + a.child + "_" + std::to_string(images) + ".json", device,
                 train_step);
    }
    // Evaluation as the trainer runs it: eval mode, no autograd, at eval.batch_size (at most two
    // training batches here, to keep the CPU suite short); the first batch (cold: Kronecker
    // experts build H, allocator warm-up) and the mean of the next ones.
    (*model)->eval();
    const int64_t eval_batch = std::min<int64_t>(config->eval.batch_size, 2 * images);
    const torch::Tensor eval_x = torch::rand({eval_batch, info->channels, size, size},
                                             torch::TensorOptions().device(device));
    double cold_s = 0, warm_s = 0;
    {
      torch::NoGradGuard no_grad;
      moa::AutocastScope autocast(device, bf16);
      moa::Stopwatch eval_clock;
      (*model)->forward(eval_x);
      Synchronize(device);
      cold_s = eval_clock.Seconds();
      eval_clock.Reset();
      const int eval_batches = 2;
      for (int i = 0; i < eval_batches; ++i) (*model)->forward(eval_x);
      Synchronize(device);
      warm_s = eval_clock.Seconds() / eval_batches;
    }
    nlohmann::json out;
    out["eval_images_per_s"] = static_cast<double>(eval_batch) / warm_s;
    out["eval_cold_images_per_s"] = static_cast<double>(eval_batch) / cold_s;
    out["ms"] = seconds * 1000;
    out["images"] = images;
    out["images_per_s"] = static_cast<double>(images) / seconds;
    out["peak_mem_gb"] = peak_gb;
    out["flops"] = config->model.arch == "vit"
                       ? StepFlopsPerImage(*config, info->num_classes) * static_cast<double>(images)
                       : 0.0;
    // With the adapters' own work: what the LoRA-MoA / LoRA step ratio is bound by.
    out["flops_with_adapters"] =
        config->model.arch == "vit"
            ? out["flops"].get<double>() +
                  3.0 * AdapterFlopsPerImage(**model, *config) * static_cast<double>(images)
            : 0.0;
    std::printf("%s\n", out.dump().c_str());
  } catch (const c10::OutOfMemoryError&) {
    std::printf("{\"oom\": true}\n");
  } catch (const std::exception& e) {
    // Any other failure ends this row with the reason (the row shows -1).
    std::fprintf(stderr, "vit_step_bench %s: %s\n", a.child.c_str(),
                 moa::ExceptionMessage(e).c_str());
    return 1;
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

// The flags both sides' measurements take: device, precision, batch, steps, warm-up, threads.
std::vector<std::string> StepFlags(const Args& a, int64_t batch) {
  return {"--device",    a.device,
          "--precision", a.precision,
          "--batch",     std::to_string(batch),
          "--steps",     std::to_string(a.steps),
          "--warmup",    std::to_string(a.warmup),
          "--threads",   std::to_string(a.threads)};
}

std::vector<std::string> MoaCommand(const char* self, const Args& a, const std::string& method,
                                    int64_t batch, bool probe = false) {
  std::vector<std::string> c = {self,
                                "--child",
                                method,
                                "--domains",
                                std::to_string(a.domains),
                                a.small ? "--small" : "--full-size"};
  const std::vector<std::string> step = StepFlags(a, batch);
  c.insert(c.end(), step.begin(), step.end());
  if (probe) c.push_back("--probe");
  if (!probe && !a.trace.empty()) c.insert(c.end(), {"--trace", a.trace});
  return c;
}

// `images`: the whole step's batch, as the moa measurement reported it.
std::vector<std::string> TorchCommand(const Args& a, const std::string& method, int64_t images) {
  const bool small_demo = method.rfind("small_", 0) == 0;
  const std::string kind = small_demo ? method.substr(6) : method;
  std::vector<std::string> c = {moa::bench::PythonPath(),
                                moa::bench::SourceDir() + "/bench/torch_vit_step.py", "--method",
                                kind};
  const std::vector<std::string> step = StepFlags(a, images);
  c.insert(c.end(), step.begin(), step.end());
  if (!a.trace.empty()) {
    c.insert(c.end(),
             {"--trace", a.trace + "/torch_" + method + "_" + std::to_string(images) + ".json"});
  }
  if (method == "erm") {
    c.insert(c.end(), {"--img", "28", "--in-chans", "1", "--classes", "10", "--lr", "1e-3"});
  } else if (small_demo) {
    // configs/rfmnist_lora*.ini: LoRA r=8 / MoA on qkv, proj, fc1, fc2 of every block.
    c.insert(c.end(), {"--img",    "28",     "--patch",     "7",         "--in-chans",
                       "1",        "--dim",  "128",         "--depth",   "6",
                       "--heads",  "4",      "--mlp-ratio", "2",         "--classes",
                       "10",       "--rank", "8",           "--targets", "qkv,proj,fc1,fc2",
                       "--blocks", "all",    "--proj-dim",  "64",        "--lr",
                       "1e-3"});
  } else {
    c.insert(c.end(), {"--targets", method == "lora" ? "qkv,proj" : "qkv", "--blocks",
                       method == "moa" ? "every_other" : "all", "--rank", "2"});
    if (a.small)
      c.insert(c.end(), {"--dim", "192", "--depth", "4", "--heads", "3", "--proj-dim", "64"});
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
  if (ms > 0 && t_ms > 0) std::snprintf(speed, sizeof(speed), "%.2fx", ms / t_ms);
  const double eval_rate = number(m, "eval_images_per_s"),
               eval_cold = number(m, "eval_cold_images_per_s");
  char eval[32] = "-";
  if (eval_rate > 0 && rate > 0) {
    std::snprintf(eval, sizeof(eval), "%.0f (%.0f) %.1fx", eval_rate, eval_cold, eval_rate / rate);
  }
  std::printf(
      "| %-10s | %-4s | %5lld | %8.1f | %8.1f | %6.2f | %6s | %8.1f | %8.1f | %6.2f | %6s | %s |\n",
      label.c_str(), a.precision.c_str(), static_cast<long long>(batch), ms, rate, mem, mfu, t_ms,
      t_rate, t_mem, speed, eval);
}

// The suite's last rows: ViT-B/16 LoRA at 8 images per domain, where activations pass glibc's
// 32 MiB mmap threshold. moa (linked with tcmalloc) against PyTorch eager as users run it (glibc's
// malloc) and against PyTorch eager with the same tcmalloc preloaded (LD_PRELOAD, the tuning
// PyTorch's CPU performance guide suggests): one run each, as a step takes seconds here.
void LargeBatchAllocatorRows(const char* self, Args a) {
  const std::string tcmalloc = MOA_TCMALLOC_PATH;
  if (tcmalloc.empty()) {
    std::printf("(large-batch allocator rows skipped: this build links glibc's malloc)\n");
    return;
  }
  a.batch = 8;
  a.trace.clear();  // the two PyTorch rows would write one file
  a.steps = 2;
  a.warmup = 1;
  const int64_t images = a.batch * a.domains;
  std::printf(
      "\nViT-B/16 LoRA at %lld images (8 per domain), one run each: moa links tcmalloc; the "
      "PyTorch rows run with glibc's malloc, then with tcmalloc preloaded\n",
      static_cast<long long>(images));
  const std::vector<std::string> torch_command = TorchCommand(a, "lora", images);
  std::vector<std::string> preloaded = {"env", "LD_PRELOAD=" + tcmalloc};
  preloaded.insert(preloaded.end(), torch_command.begin(), torch_command.end());
  const nlohmann::json m = RunJson(MoaCommand(self, a, "lora", a.batch));
  const nlohmann::json glibc = RunJson(torch_command);
  const nlohmann::json tc = RunJson(preloaded);
  PrintRow(a, "lora b8", images, m, glibc);
  PrintRow(a, "lora b8 tc", images, m, tc);
}

// The largest per-domain batch that fits for moa: two-step probes (a process each) doubling from
// twice --batch until one runs out of memory, then a full measurement at the largest that fit,
// and PyTorch eager at the same images, or a note where it runs out of memory there.
void MaxBatchRow(const char* self, const Args& a, const std::string& method) {
  int64_t fits = 0;
  bool failed = false;
  for (int64_t b = a.batch * 2; b <= 4096; b *= 2) {
    const nlohmann::json probe = RunJson(MoaCommand(self, a, method, b, /*probe=*/true));
    if (probe.is_object() && probe.contains("oom")) break;
    if (!probe.is_object() || !probe.contains("fits")) {
      std::printf("(%s: the probe at %lld per domain failed; the search stops there)\n",
                  method.c_str(), static_cast<long long>(b));
      failed = true;
      break;
    }
    fits = b;
  }
  if (fits == 0) {
    if (!failed) {
      std::printf("(%s: no batch above %lld per domain fits)\n", method.c_str(),
                  static_cast<long long>(a.batch));
    }
    return;
  }
  // The measurement holds more than a probe (more steps, the evaluation): where it runs out of
  // memory, half the batch.
  nlohmann::json m = RunJson(MoaCommand(self, a, method, fits));
  if (m.is_object() && m.contains("oom") && fits / 2 > a.batch) {
    if (!a.trace.empty()) {
      std::filesystem::remove(a.trace + "/moa_" + method + "_" + std::to_string(fits * a.domains) +
                              ".json");
    }
    fits /= 2;
    m = RunJson(MoaCommand(self, a, method, fits));
  }
  const int64_t images =
      m.is_object() && m.contains("images") ? m["images"].get<int64_t>() : fits * a.domains;
  const nlohmann::json t = a.torch ? RunJson(TorchCommand(a, method, images)) : nlohmann::json();
  PrintRow(a, method + " max", images, m, t);
  if (t.is_object() && t.contains("oom")) {
    std::printf("(%s max: PyTorch eager runs out of memory at %lld images)\n", method.c_str(),
                static_cast<long long>(images));
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Line by line: a run stopped by a time limit keeps every line it printed, and a child's JSON
  // line is out before the process ends.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Args a;
  std::string suite;
  bool batch_given = false, steps_given = false;
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
    else if (flag == "--batch") {
      a.batch = std::stoll(value());
      batch_given = true;
    } else if (flag == "--steps") {
      a.steps = std::stoll(value());
      steps_given = true;
    } else if (flag == "--domains")
      a.domains = std::stoll(value());
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
    else if (flag == "--max-batch-only")
      a.max_batch = a.max_batch_only = true;
    else if (flag == "--probe")
      a.probe = true;
    else if (flag == "--no-torch")
      a.torch = false;
    else if (flag == "--trace")
      a.trace = value();
    else if (flag == "--suite")
      suite = value();
    else if (flag == "--repeat")
      a.repeat = std::max<int64_t>(1, std::stoll(value()));
    else {
      std::fprintf(stderr, "unknown option %s (see the header of bench/vit_step_bench.cc)\n",
                   flag.c_str());
      return 2;
    }
  }
  if (suite == "cpu") {
    a.device = "cpu";
    a.precision = "fp32";
    a.methods = "small_lora,small_moa,lora,moa,erm";
    a.small = false;
    if (!batch_given) a.batch = 2;
    if (!steps_given) a.steps = 5;
    if (a.repeat == 1) a.repeat = 3;
  } else if (!suite.empty()) {
    std::fprintf(stderr, "--suite: only cpu\n");
    return 2;
  }
  if (a.device == "cuda" && moa::parallel::VisibleGpus() == 0) {
    std::fprintf(stderr, "vit_step_bench: no GPU visible; use --device cpu (with --small)\n");
    return 1;
  }
  if (!a.trace.empty() && a.child.empty()) {
    std::error_code error;
    std::filesystem::create_directories(a.trace, error);
    if (error || access(a.trace.c_str(), W_OK) != 0) {
      std::fprintf(stderr, "--trace %s: cannot create or write the folder: %s\n", a.trace.c_str(),
                   error ? error.message().c_str() : std::strerror(errno));
      return 2;
    }
  }
  if (!a.child.empty()) return Child(a);
  if (a.device == "cuda") {
    const std::string gpu = moa::parallel::DescribeDevice(torch::Device(torch::kCUDA, 0)).name;
    g_peak = PeakOf(gpu);
    std::printf("GPU: %s; MFU against the %s's dense peak (bf16 %.0f, fp32 %.0f TFLOP/s)\n",
                gpu.c_str(), g_peak.card.c_str(), g_peak.bf16 / 1e12, g_peak.fp32 / 1e12);
  }

  if (suite.empty()) {
    std::printf(
        "ViT %s, %s, %s, %lld training domains; moa vs PyTorch eager (timm + PyTorch "
        "adapters, same torch)\n",
        a.small ? "width 192 depth 4 (small)" : "B/16", a.device.c_str(), a.precision.c_str(),
        static_cast<long long>(a.domains));
    if (a.precision == "bf16" && a.device == "cpu" && !moa::parallel::CpuHasBf16MatrixUnits()) {
      std::printf(
          "note: this CPU has no bfloat16 matrix instructions (AVX512-BF16, AMX, Arm BF16): both "
          "sides run bf16 matrix products in LibTorch's scalar fallback\n");
    }
  } else {
    std::printf(
        "CPU suite, fp32, %s threads: moa vs PyTorch eager on the same torch (timm + PyTorch "
        "adapters; DomainBed's MNIST_CNN for erm); moa/torch time below 1 means moa is faster\n",
        a.threads > 0 ? std::to_string(a.threads).c_str() : "default");
  }
  std::printf(
      "| method     | prec | batch |  moa ms  | moa im/s | moa GB |  MFU   | torch ms | torch im/s "
      "| torch GB | moa/torch time | moa eval im/s (cold), / train im/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::map<std::string, double> rate_of, flops_of;
  std::string methods = a.methods;
  size_t start = 0;
  while (start <= methods.size()) {
    const size_t comma = methods.find(',', start);
    const std::string method = methods.substr(start, comma - start);
    start = comma == std::string::npos ? methods.size() + 1 : comma + 1;
    if (!kConfigs.count(method)) {
      std::fprintf(stderr, "unknown method %s (lora, moa, full, small_lora, small_moa, erm)\n",
                   method.c_str());
      return 2;
    }
    // moa and PyTorch take turns, --repeat times; each keeps its fastest run (noise on a shared
    // machine only ever adds time).
    if (!a.max_batch_only) {
      nlohmann::json m, t;
      int64_t images = a.batch * a.domains;
      auto faster = [](const nlohmann::json& candidate, const nlohmann::json& best) {
        if (!candidate.is_object() || !candidate.contains("ms")) return false;
        return !best.is_object() || !best.contains("ms") || candidate["ms"] < best["ms"];
      };
      for (int64_t r = 0; r < a.repeat; ++r) {
        const nlohmann::json mr = RunJson(MoaCommand(argv[0], a, method, a.batch));
        if (faster(mr, m)) m = mr;
        if (m.is_object() && m.contains("images")) images = m["images"].get<int64_t>();
        if (!a.torch) continue;
        const nlohmann::json tr = RunJson(TorchCommand(a, method, images));
        if (faster(tr, t)) t = tr;
      }
      PrintRow(a, method, images, m, t);
      if (m.is_object() && m.contains("images_per_s")) {
        rate_of[method] = m["images_per_s"];
        flops_of[method] = m["flops_with_adapters"].get<double>() / m["images"].get<double>();
      }
    }
    if (a.max_batch && a.device == "cuda") MaxBatchRow(argv[0], a, method);
  }
  // Per image, as the two configurations' batches may differ.
  auto ratio = [&](const std::string& lora, const std::string& mix, const char* what) {
    if (!rate_of.count(lora) || !rate_of.count(mix)) return;
    std::printf(
        "LoRA-MoA step / LoRA step (%s, per image): %.2fx; counted FLOPs with the "
        "adapters: %.2fx\n",
        what, rate_of[lora] / rate_of[mix], flops_of[mix] / flops_of[lora]);
  };
  ratio("lora", "moa", a.small ? "small width 192" : "ViT-B/16");
  ratio("small_lora", "small_moa", "the demo's small ViT");
  if (suite == "cpu" && a.torch) LargeBatchAllocatorRows(argv[0], a);
  return 0;
}
