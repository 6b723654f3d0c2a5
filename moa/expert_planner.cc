#include "moa/expert_planner.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

#include <torch/torch.h>

#include "common/error.h"
#include "common/timer.h"

namespace moa {
namespace {

// Trainable parameters and their gradients stay float32 under bf16 autocast too.
constexpr double kParameterBytes = 4;
// Forward plus backward (input and weight gradients) cost three forwards.
constexpr double kTrainingPasses = 3;

// A ring all-reduce of `bytes` over `ranks` ranks.
double AllReduceSeconds(double bytes, int64_t ranks, const MachineRates& rates) {
  if (ranks <= 1 || bytes <= 0) return 0;
  return 2.0 * static_cast<double>(ranks - 1) / static_cast<double>(ranks) * bytes /
             rates.link_bytes_per_s +
         rates.latency_s;
}

}  // namespace

std::string ExpertModeEstimate::Describe() const {
  char line[512];
  std::snprintf(line, sizeof(line),
                "%s: sharded %.3g ms (experts %.3g, all-to-all %.3g for %.3g MB, refresh %.3g, "
                "gradients %.3g "
                "for %.3g MB, update %.3g) vs replicated %.3g ms (experts %.3g, gradients %.3g "
                "for %.3g MB, update %.3g)",
                choose_sharded() ? "sharded" : "replicated", sharded_s() * 1e3,
                sharded_compute_s * 1e3, sharded_exchange_s * 1e3, exchange_bytes / 1e6,
                sharded_refresh_s * 1e3, sharded_gradient_s * 1e3, sharded_gradient_bytes / 1e6,
                sharded_update_s * 1e3, replicated_s() * 1e3, replicated_compute_s * 1e3,
                replicated_gradient_s * 1e3, replicated_gradient_bytes / 1e6,
                replicated_update_s * 1e3);
  return line;
}

ExpertModeEstimate& ExpertModeEstimate::operator+=(const ExpertModeEstimate& other) {
  replicated_compute_s += other.replicated_compute_s;
  replicated_gradient_s += other.replicated_gradient_s;
  replicated_update_s += other.replicated_update_s;
  sharded_compute_s += other.sharded_compute_s;
  sharded_exchange_s += other.sharded_exchange_s;
  sharded_gradient_s += other.sharded_gradient_s;
  sharded_update_s += other.sharded_update_s;
  sharded_refresh_s += other.sharded_refresh_s;
  exchange_bytes += other.exchange_bytes;
  replicated_gradient_bytes += other.replicated_gradient_bytes;
  sharded_gradient_bytes += other.sharded_gradient_bytes;
  return *this;
}

ExpertModeEstimate EstimateExpertModes(const ExpertLayerShape& shape, int64_t dp, int64_t ep,
                                       const std::vector<int>& owner, const MachineRates& rates) {
  ExpertModeEstimate e;
  const int64_t experts = static_cast<int64_t>(shape.expert_parameters.size());
  const int64_t world = dp * ep;
  // Evenly spread routing: each expert sees tokens * k / E of every rank's tokens.
  const double per_expert_tokens =
      static_cast<double>(shape.tokens_per_rank * shape.top_k) / static_cast<double>(experts);
  const double all_parameters = static_cast<double>(
      std::accumulate(shape.expert_parameters.begin(), shape.expert_parameters.end(), int64_t{0}));

  double own_flops = 0;
  for (int64_t x = 0; x < experts; ++x)
    own_flops += per_expert_tokens * shape.expert_flops_per_token[x];
  e.replicated_compute_s = kTrainingPasses * own_flops / rates.flops_per_s;
  e.replicated_gradient_bytes = all_parameters * kParameterBytes;
  e.replicated_gradient_s = AllReduceSeconds(e.replicated_gradient_bytes, world, rates);
  e.replicated_update_s = all_parameters * rates.update_s_per_parameter;

  // The busiest holder: its experts' tokens from all ep ranks, its parameters.
  std::vector<double> holder_flops(ep, 0), holder_parameters(ep, 0);
  for (int64_t x = 0; x < experts; ++x) {
    holder_flops[owner[x]] +=
        static_cast<double>(ep) * per_expert_tokens * shape.expert_flops_per_token[x];
    holder_parameters[owner[x]] += static_cast<double>(shape.expert_parameters[x]);
  }
  const double busiest_flops = *std::max_element(holder_flops.begin(), holder_flops.end());
  const double busiest_parameters =
      *std::max_element(holder_parameters.begin(), holder_parameters.end());
  e.sharded_compute_s = kTrainingPasses * busiest_flops / rates.flops_per_s;
  // Tokens whose expert lives on another rank, for the rank that holds the fewest experts: each
  // crosses with its input features and comes back with its output features, twice (forward
  // and backward).
  std::vector<int64_t> held(ep, 0);
  for (int64_t x = 0; x < experts; ++x) ++held[owner[x]];
  const double fewest = static_cast<double>(*std::min_element(held.begin(), held.end()));
  const double remote = static_cast<double>(shape.tokens_per_rank * shape.top_k) *
                        (1.0 - fewest / static_cast<double>(experts));
  e.exchange_bytes = 2.0 * remote * static_cast<double>(shape.in_features + shape.out_features) *
                     shape.exchange_element_bytes;
  // Four payload exchanges, each preceded by its counts.
  e.sharded_exchange_s =
      ep > 1 ? e.exchange_bytes / rates.all_to_all_bytes_per_s + 8 * rates.latency_s : 0;
  e.sharded_gradient_bytes = busiest_parameters * kParameterBytes;
  e.sharded_gradient_s = AllReduceSeconds(e.sharded_gradient_bytes, dp, rates);
  e.sharded_update_s = busiest_parameters * rates.update_s_per_parameter;
  // Every rank receives the experts it does not hold.
  if (shape.refresh_every_step && ep > 1) {
    e.sharded_refresh_s =
        (all_parameters - busiest_parameters) * kParameterBytes / rates.link_bytes_per_s +
        static_cast<double>(experts) * rates.latency_s;
  }
  return e;
}

double ExpertFlopsPerToken(const MoaAdapterImpl& layer, int64_t e) {
  const double in = static_cast<double>(layer.in_features());
  const double out = static_cast<double>(layer.out_features());
  if (layer.config().expert == "kronecker") return 2.0 * in * out;
  return 2.0 * static_cast<double>(layer.config().ranks.at(e)) * (in + out);
}

ExpertLayerShape ShapeOf(const MoaAdapterImpl& layer, int64_t tokens_per_rank, bool bf16) {
  ExpertLayerShape shape;
  shape.exchange_element_bytes = bf16 ? 2 : 4;
  shape.in_features = layer.in_features();
  shape.out_features = layer.out_features();
  shape.tokens_per_rank = tokens_per_rank;
  shape.top_k = layer.config().top_k;
  for (int64_t e = 0; e < layer.num_experts(); ++e) {
    int64_t count = 0;
    for (const torch::Tensor& p : layer.expert(e)->parameters()) count += p.numel();
    shape.expert_parameters.push_back(count);
    shape.expert_flops_per_token.push_back(ExpertFlopsPerToken(layer, e));
  }
  return shape;
}

namespace {

// The median of `repeats` timings of `work` (after one warm-up call).
template <typename Work>
double MedianSeconds(int repeats, Work work) {
  work();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    Stopwatch clock;
    work();
    times.push_back(clock.Seconds());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

MachineRates MeasureMachineRates(parallel::Communicator& world, bool links,
                                 const torch::Device& device, bool bf16, bool fused_adam) {
  torch::NoGradGuard no_grad;
  MachineRates rates;
  const auto on_device = torch::TensorOptions().device(device);
  // A GPU runs work queued: a timing ends when the device has finished it.
  const auto finished = [&device] {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
  };
  // Large enough that a GPU's product is not just its launch.
  const int64_t n = device.is_cuda() ? 4096 : 384;
  const auto operands = on_device.dtype(bf16 ? torch::kBFloat16 : torch::kFloat32);
  const torch::Tensor a = torch::randn({n, n}, operands), b = torch::randn({n, n}, operands);
  torch::Tensor product = torch::empty({n, n}, operands);
  rates.flops_per_s = 2.0 * n * n * n / MedianSeconds(5, [&] {
                        torch::mm_out(product, a, b);
                        finished();
                      });
  const int64_t count = 1 << 20;
  torch::Tensor weight = torch::zeros({count}, on_device).requires_grad_(true);
  weight.mutable_grad() = torch::randn({count}, on_device);
  torch::optim::Adam adam({weight}, torch::optim::AdamOptions(1e-3));
  const torch::Tensor exp_avg = torch::zeros_like(weight), exp_avg_sq = torch::zeros_like(weight);
  const torch::Tensor step = torch::ones({}, on_device);
  const auto update = [&] {
    if (fused_adam) {
      at::_fused_adam_({weight.detach()}, {weight.grad()}, {exp_avg}, {exp_avg_sq}, {}, {step},
                       /*lr=*/1e-3, /*beta1=*/0.9, /*beta2=*/0.999, /*weight_decay=*/0,
                       /*eps=*/1e-8, /*amsgrad=*/false, /*maximize=*/false);
    } else {
      adam.step();
    }
  };
  rates.update_s_per_parameter = MedianSeconds(5,
                                               [&] {
                                                 update();
                                                 finished();
                                               }) /
                                 count;
  const int ranks = world.size();
  if (ranks > 1 && links) {
    // Every rank must time the same collectives: barriers keep the starts together, and the
    // barrier's own time is taken off.
    const double barrier_s = MedianSeconds(9, [&] { ThrowIfError(world.Barrier()); });
    torch::Tensor one = torch::ones({1}, on_device);
    rates.latency_s = std::max(0.0, MedianSeconds(9, [&] {
                                      ThrowIfError(world.Barrier());
                                      ThrowIfError(world.AllReduce(one, parallel::ReduceOp::kSum));
                                      finished();
                                    }) - barrier_s);
    const int64_t floats = 1 << 20;  // 4 MiB
    torch::Tensor buffer = torch::ones({floats}, on_device);
    const double reduce_s = MedianSeconds(5, [&] {
      ThrowIfError(world.Barrier());
      ThrowIfError(world.AllReduce(buffer, parallel::ReduceOp::kSum));
      finished();
    });
    rates.link_bytes_per_s = 2.0 * (ranks - 1) / ranks * floats * 4.0 /
                             std::max(1e-9, reduce_s - barrier_s - rates.latency_s);
    // An equal number of 1 KiB rows to every rank.
    const int64_t per_rank = floats / 256 / ranks;
    const torch::Tensor rows = torch::ones({per_rank * ranks, 256}, on_device);
    const std::vector<int64_t> send(ranks, per_rank);
    const double exchange_s = MedianSeconds(5, [&] {
      ThrowIfError(world.Barrier());
      ThrowIfError(world.AllToAllV(rows, send, nullptr).status());
      finished();
    });
    rates.all_to_all_bytes_per_s = static_cast<double>(ranks - 1) * per_rank * 256 * 4.0 /
                                   std::max(1e-9, exchange_s - barrier_s - rates.latency_s);
  }
  if (ranks == 1) return rates;
  // Every rank decides with the same numbers: the world's average.
  torch::Tensor shared =
      torch::tensor({rates.flops_per_s, rates.update_s_per_parameter, rates.latency_s,
                     rates.link_bytes_per_s, rates.all_to_all_bytes_per_s},
                    torch::kFloat64);
  ThrowIfError(world.AllReduce(shared, parallel::ReduceOp::kAverage));
  rates.flops_per_s = shared[0].item<double>();
  rates.update_s_per_parameter = shared[1].item<double>();
  rates.latency_s = shared[2].item<double>();
  rates.link_bytes_per_s = shared[3].item<double>();
  rates.all_to_all_bytes_per_s = shared[4].item<double>();
  return rates;
}

}  // namespace moa
