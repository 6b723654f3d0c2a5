// Expert parallelism, measured: one training step (forward, backward, gradient all-reduce, Adam)
// of MoA layers with their experts replicated on every rank or sharded over the ranks, with the
// forward split into routing, dispatch, experts and combine, the token bytes the all-to-alls move
// and the gradient bytes all-reduced, next to the planner's estimate and choice. Run under mpirun
// with 1, 2 and 4 ranks (world = ep, dp = 1); bench/expert_parallel.sh runs all three and prints
// each step time against the one-rank baseline of the same run.
//
// Two configurations:
//   paper: 4 LoRA experts of ranks 1, 2, 4, 8 on qkv (768 -> 2304), 16 images x 197 tokens
//   wide:  16 LoRA experts of rank 256 on fc1 (768 -> 3072) and fc2 (3072 -> 768), 4 x 197 tokens
// The global batch is the same at every rank count; each rank takes its slice.
//
// With --precision bf16 the forward runs under bf16 autocast, as train.precision = bf16 does: the
// all-to-alls move bfloat16 (half the token bytes of float32).
//
// usage: mpirun -np N expert_parallel_bench [--steps 4] [--threads 1] [--config paper|wide|both]
//        [--precision fp32|bf16]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/threads.h"
#include "common/timer.h"
#include "moa/autocast.h"
#include "moa/expert_placement.h"
#include "moa/expert_planner.h"
#include "moa/moa_layer.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_communicator.h"

namespace {

using moa::parallel::Communicator;

struct LayerSpec {
  std::string name;
  int64_t in, out;
};

struct BenchConfig {
  std::string name;
  std::vector<LayerSpec> layers;
  std::vector<int64_t> ranks;
  int64_t images;  // global batch
  int64_t tokens_per_image = 197;
};

void Check(const absl::Status& status) {
  if (!status.ok()) {
    std::fprintf(stderr, "expert_parallel_bench: %s\n", std::string(status.message()).c_str());
    std::exit(1);
  }
}

// The largest value over ranks (the step takes as long as its slowest rank).
double MaxOverRanks(Communicator& world, double value) {
  auto all = world.AllGather(torch::tensor({value}, torch::kFloat64));
  Check(all.status());
  return all->max().item<double>();
}
double SumOverRanks(Communicator& world, double value) {
  torch::Tensor t = torch::tensor({value}, torch::kFloat64);
  Check(world.AllReduce(t, moa::parallel::ReduceOp::kSum));
  return t.item<double>();
}

// One MoA layer's forward per step (slowest rank) and the token bytes its all-to-alls move.
struct LayerMeasured {
  std::string name;
  double route_ms = 0, dispatch_ms = 0, experts_ms = 0, combine_ms = 0;
  double token_mb = 0;  // all ranks, forward and backward
};

struct Measured {
  double step_ms = 0;      // forward, backward, gradient all-reduce and Adam, slowest rank
  double gradient_mb = 0;  // gradient bytes each rank all-reduces per step
  std::vector<LayerMeasured> layers;
};

Measured RunMode(const BenchConfig& config, bool sharded, bool bf16, int steps,
                 Communicator& world) {
  const int ranks = world.size(), me = world.rank();
  auto context = std::make_shared<moa::RoutingContext>();
  context->seed = 1;
  const int64_t local_images = config.images / ranks;
  context->global_batch = config.images;
  for (int64_t i = 0; i < local_images; ++i) context->global_rows.push_back(me * local_images + i);
  context->batch_group = &world;
  moa::MoaConfig moa_config;
  moa_config.ranks = config.ranks;
  moa_config.aux_loss = true;
  torch::manual_seed(0);
  std::vector<std::shared_ptr<moa::MoaAdapterImpl>> layers;
  std::vector<torch::Tensor> inputs, weights;
  for (size_t l = 0; l < config.layers.size(); ++l) {
    const LayerSpec& spec = config.layers[l];
    layers.push_back(std::make_shared<moa::MoaAdapterImpl>(
        spec.in, spec.out, moa_config, static_cast<int64_t>(l), context, nullptr));
    layers.back()->train();
    inputs.push_back(torch::randn({local_images, config.tokens_per_image, spec.in}));
    weights.push_back(torch::randn({local_images, config.tokens_per_image, spec.out}));
  }
  std::unique_ptr<Communicator> ep_group;
  auto split = world.Split(0, me);
  Check(split.status());
  ep_group = std::move(*split);
  // Parameters this rank updates, and the gradients it all-reduces over the world (sharded
  // experts need none: with dp = 1 each expert has one replica).
  std::vector<torch::Tensor> updated, reduced, held;
  for (const auto& layer : layers) {
    std::vector<int64_t> costs;
    for (int64_t e = 0; e < layer->num_experts(); ++e) {
      costs.push_back(static_cast<int64_t>(moa::ExpertFlopsPerToken(*layer, e)));
    }
    auto owner = moa::PartitionExperts(costs, ranks);
    Check(owner.status());
    if (sharded) layer->set_expert_parallel({ep_group.get(), *owner});
    for (const auto& p : layer->router->parameters()) {
      updated.push_back(p);
      reduced.push_back(p);
    }
    for (int64_t e = 0; e < layer->num_experts(); ++e) {
      for (const auto& p : layer->expert(e)->parameters()) {
        if (!sharded) reduced.push_back(p);
        if (!sharded || (*owner)[e] == me) updated.push_back(p);
        if (sharded && (*owner)[e] == me) held.push_back(p);
      }
    }
  }
  auto sync_group = world.Split(0, me);
  Check(sync_group.status());
  moa::parallel::GradientSynchronizer sync(**sync_group, reduced, 4 << 20);
  torch::optim::Adam adam(updated, torch::optim::AdamOptions(1e-4));
  Measured m;
  for (const torch::Tensor& p : reduced) m.gradient_mb += p.numel() * 4.0 / 1e6;
  for (int step = 0; step <= steps; ++step) {  // step 0 warms up
    if (step == 1) {
      for (auto& layer : layers) layer->ResetTimings();
    }
    Check(world.Barrier());
    moa::Stopwatch clock;
    context->step = step;
    torch::Tensor loss = torch::zeros({});
    for (size_t l = 0; l < layers.size(); ++l) {
      torch::Tensor delta;
      {
        moa::AutocastScope autocast(torch::kCPU, bf16);
        delta = layers[l]->Delta(inputs[l]);
      }
      loss = loss + (delta * weights[l]).sum() + layers[l]->aux_loss();
    }
    adam.zero_grad();
    loss.backward();
    Check(sync.Finish());
    {
      // A holder's expert gradient sums the whole group's tokens: the batch mean divides by ep.
      torch::NoGradGuard no_grad;
      for (const torch::Tensor& p : held) {
        if (p.grad().defined()) p.mutable_grad().div_(static_cast<double>(ranks));
      }
    }
    adam.step();
    if (step > 0) m.step_ms += clock.Seconds() * 1e3 / steps;
  }
  m.step_ms = MaxOverRanks(world, m.step_ms);
  for (size_t l = 0; l < layers.size(); ++l) {
    const moa::DispatchTimings& t = layers[l]->timings();
    LayerMeasured lm;
    lm.name = config.layers[l].name;
    lm.route_ms = MaxOverRanks(world, t.route_s * 1e3 / steps);
    lm.dispatch_ms = MaxOverRanks(world, t.dispatch_s * 1e3 / steps);
    lm.experts_ms = MaxOverRanks(world, t.experts_s * 1e3 / steps);
    lm.combine_ms = MaxOverRanks(world, t.combine_s * 1e3 / steps);
    lm.token_mb = 2 * SumOverRanks(world, static_cast<double>(t.bytes_sent) / steps) / 1e6;
    m.layers.push_back(lm);
  }
  return m;
}

// The planner's estimate for a whole configuration: the sum over its layers.
moa::ExpertModeEstimate Plan(const BenchConfig& config, int ranks, bool bf16,
                             const moa::MachineRates& rates) {
  moa::ExpertModeEstimate total;
  auto context = std::make_shared<moa::RoutingContext>();
  moa::MoaConfig moa_config;
  moa_config.ranks = config.ranks;
  for (size_t l = 0; l < config.layers.size(); ++l) {
    moa::MoaAdapterImpl layer(config.layers[l].in, config.layers[l].out, moa_config, 0, context,
                              nullptr);
    std::vector<int64_t> costs;
    for (int64_t e = 0; e < layer.num_experts(); ++e) {
      costs.push_back(static_cast<int64_t>(moa::ExpertFlopsPerToken(layer, e)));
    }
    const auto owner = moa::PartitionExperts(costs, ranks);
    Check(owner.status());
    total += moa::EstimateExpertModes(
        moa::ShapeOf(layer, config.images / ranks * config.tokens_per_image, bf16), 1, ranks,
        *owner, rates);
  }
  return total;
}

void PrintRow(const char* config, int ranks, const char* mode, const Measured& m) {
  std::printf("%-6s %3d  %-10s %9.1f %9.1f\n", config, ranks, mode, m.step_ms, m.gradient_mb);
  for (const LayerMeasured& l : m.layers) {
    std::printf(
        "    %-4s forward ms: route %.1f, dispatch %.1f, experts %.1f, combine %.1f; "
        "tokens moved %.1f MB\n",
        l.name.c_str(), l.route_ms, l.dispatch_ms, l.experts_ms, l.combine_ms, l.token_mb);
  }
  std::printf("RESULT %s %d %s %.3f\n", config, ranks, mode, m.step_ms);
}

}  // namespace

int main(int argc, char** argv) {
  moa::parallel::MpiRuntime mpi(&argc, &argv);
  int steps = 4, threads = 1;
  std::string which = "both", precision = "fp32";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--steps") steps = std::atoi(argv[i + 1]);
    if (flag == "--threads") threads = std::atoi(argv[i + 1]);
    if (flag == "--config") which = argv[i + 1];
    if (flag == "--precision") precision = argv[i + 1];
  }
  if (precision != "fp32" && precision != "bf16") {
    std::fprintf(stderr, "expert_parallel_bench: --precision must be fp32 or bf16, not %s\n",
                 precision.c_str());
    return 1;
  }
  const bool bf16 = precision == "bf16";
  moa::ApplyThreadCount(threads);
  auto world = moa::parallel::MakeWorldCommunicator();
  const int ranks = world->size();
  const bool lead = world->rank() == 0;
  const std::vector<BenchConfig> configs = {
      {"paper", {{"qkv", 768, 2304}}, {1, 2, 4, 8}, 16},
      {"wide", {{"fc1", 768, 3072}, {"fc2", 3072, 768}}, std::vector<int64_t>(16, 256), 4},
  };
  const moa::MachineRates rates = moa::MeasureMachineRates(*world, true, torch::kCPU, bf16);
  if (lead) {
    std::printf(
        "%d ranks x %d threads, %s; rates: %.1f GFLOP/s, Adam %.2f ns/parameter, "
        "all-reduce %.2f GB/s, all-to-all %.2f GB/s, latency %.1f us\n",
        ranks, threads, precision.c_str(), rates.flops_per_s / 1e9,
        rates.update_s_per_parameter * 1e9, rates.link_bytes_per_s / 1e9,
        rates.all_to_all_bytes_per_s / 1e9, rates.latency_s * 1e6);
    std::printf("%-6s %3s  %-10s %9s %9s\n", "config", "ep", "mode", "step ms", "grad MB");
  }
  for (const BenchConfig& config : configs) {
    if (which != "both" && which != config.name) continue;
    if (config.images % ranks != 0) continue;
    if (ranks == 1) {
      const Measured local = RunMode(config, false, bf16, steps, *world);
      if (lead) PrintRow(config.name.c_str(), ranks, "local", local);
      continue;
    }
    const Measured replicated = RunMode(config, false, bf16, steps, *world);
    const Measured sharded = RunMode(config, true, bf16, steps, *world);
    if (lead) {
      PrintRow(config.name.c_str(), ranks, "replicated", replicated);
      PrintRow(config.name.c_str(), ranks, "sharded", sharded);
      const moa::ExpertModeEstimate plan = Plan(config, ranks, bf16, rates);
      const bool faster_sharded = sharded.step_ms < replicated.step_ms;
      std::printf("  planner: %s\n  measured faster: %s; planner %s\n", plan.Describe().c_str(),
                  faster_sharded ? "sharded" : "replicated",
                  plan.choose_sharded() == faster_sharded ? "agrees" : "DISAGREES");
    }
  }
  return 0;
}
