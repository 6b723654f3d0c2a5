// Chooses, per MoA layer, between sharding the experts over the expert-parallel group and
// replicating them on every rank (parallel.expert_mode = auto), from a cost model of one training
// step: token all-to-all bytes and the holders' expert FLOPs against gradient all-reduce bytes and
// optimizer updates, priced with link and compute rates measured at start-up or configured.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moa/moa_layer.h"
#include "parallel/communicator.h"

namespace moa {

/// What one step of a layer looks like from one rank.
struct ExpertLayerShape {
  int64_t in_features = 0;
  int64_t out_features = 0;
  int64_t tokens_per_rank = 0;  // tokens entering the layer on each rank per step
  int64_t top_k = 1;
  std::vector<int64_t> expert_parameters;      // trainable numbers per expert
  std::vector<double> expert_flops_per_token;  // forward multiply-adds x 2 per routed token
  /// Bytes of one exchanged token or output feature: 4 in float32, 2 under bf16 autocast (the
  /// sharded layer exchanges in the autocast dtype).
  double exchange_element_bytes = 4;
  /// Sharded experts copied from their holders to every rank after each step (SWAD averages
  /// every rank's copies).
  bool refresh_every_step = false;
};

/// Machine rates the estimate is priced with.
struct MachineRates {
  double link_bytes_per_s = 0;  // all-reduce bus bandwidth
  double all_to_all_bytes_per_s = 0;
  double latency_s = 0;               // one collective's fixed cost
  double flops_per_s = 0;             // dense matrix products
  double update_s_per_parameter = 0;  // one optimizer update of one parameter (Adam)
};

/// The estimate behind one layer's choice, in seconds per step on the busiest rank.
struct ExpertModeEstimate {
  // Replicated: every rank runs its own tokens through every expert, then all-reduces all expert
  // gradients over the world and updates every expert.
  double replicated_compute_s = 0, replicated_gradient_s = 0, replicated_update_s = 0;
  // Sharded: four all-to-alls move the routed tokens (forward there and back, backward the same),
  // the holder runs its experts for the whole group, all-reduces its experts' gradients over their
  // replicas (dp ranks) and updates only them.
  double sharded_compute_s = 0, sharded_exchange_s = 0, sharded_gradient_s = 0,
         sharded_update_s = 0, sharded_refresh_s = 0;
  double exchange_bytes = 0;             // all-to-all bytes a rank sends per step (sharded)
  double replicated_gradient_bytes = 0;  // gradient bytes a rank all-reduces (replicated)
  double sharded_gradient_bytes = 0;
  double replicated_s() const {
    return replicated_compute_s + replicated_gradient_s + replicated_update_s;
  }
  double sharded_s() const {
    return sharded_compute_s + sharded_exchange_s + sharded_gradient_s + sharded_update_s +
           sharded_refresh_s;
  }
  bool choose_sharded() const { return sharded_s() < replicated_s(); }
  /// Adds another layer's terms: the estimate of several layers together.
  ExpertModeEstimate& operator+=(const ExpertModeEstimate& other);
  /// One line: the choice and the terms behind it.
  std::string Describe() const;
};

/// Prices both modes for a dp x ep mesh with the experts placed by `owner` (expert -> rank of
/// the expert-parallel group), assuming routing spreads each rank's tokens evenly over experts
/// (what the load-balancing loss aims for). The busiest rank computes the most expert FLOPs,
/// sends the largest share of its tokens away (the rank holding the fewest experts), and
/// all-reduces and updates the most expert parameters.
ExpertModeEstimate EstimateExpertModes(const ExpertLayerShape& shape, int64_t dp, int64_t ep,
                                       const std::vector<int>& owner, const MachineRates& rates);

/// Forward FLOPs per routed token of expert `e`: 2 r (in + out) for a rank-r LoRA expert, 2 in out
/// for a Kronecker expert (its update matrix is applied whole). The placement cost of an expert.
double ExpertFlopsPerToken(const MoaAdapterImpl& layer, int64_t e);

/// The layer's shape for EstimateExpertModes, with `tokens_per_rank` tokens per rank and step,
/// exchanged in bfloat16 with `bf16` (train.precision = bf16), else in float32.
ExpertLayerShape ShapeOf(const MoaAdapterImpl& layer, int64_t tokens_per_rank, bool bf16 = false);

/// Measures the rates on this machine, with tensors on `device` (the device the run trains on; a
/// GPU's timings wait for it): a matrix product (in bfloat16 with `bf16`, as autocast runs the
/// experts' products), Adam updates (through ATen's fused kernel with `fused_adam`, as training
/// with optim.fused runs them, else torch::optim's per-tensor update), and, with `links`, (over
/// `world`, every rank calling) an all-reduce and an all-to-all of a few MiB plus a one-number
/// all-reduce for latency. With one rank or without `links` the link rates are left at 0. Every
/// rank gets the world's average.
MachineRates MeasureMachineRates(parallel::Communicator& world, bool links = true,
                                 const torch::Device& device = torch::kCPU, bool bf16 = false,
                                 bool fused_adam = false);

}  // namespace moa
