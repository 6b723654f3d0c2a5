// One adapted Linear's forward and backward at ViT-B/16 token counts (96 images x 197 tokens x
// 768, the qkv layer 768 -> 2304, frozen W0): a single rank-8 LoRA (the baseline, measured in
// the same run), the MoA layer with stacked, routed and the reference's dense dispatch
// (4 LoRA experts of ranks 1, 2, 4, 8, cosine router, noise, load-balancing loss), and the same
// with Kronecker experts (with the reference's dropout on H, and without, which never builds H).
// Prints ms per forward+backward and the ratio to the LoRA layer; then the evaluation forward
// (no autograd) of the same layers, and one Kronecker adapter's x H through H's structure against
// building H and multiplying by it. Last, the top-1 cosine routing and gate alone (router logits,
// noise, choice, gated rank columns, load-balancing loss; forward + backward) as ATen operations
// and as the fused function, at the demo's and at ViT-B/16's token counts; `--gate-only` runs
// just that.
//
// usage: moa_layer_bench [--images 96] [--tokens 197] [--dim 768] [--iters 5] [--threads 2]
//                        [--gate-only 1]
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/threads.h"
#include "common/timer.h"
#include "moa/adapters.h"
#include "moa/fused_gate.h"
#include "moa/moa_layer.h"
#include "moa/routing.h"

namespace {

double TimeMs(const std::function<void()>& fn, int iters) {
  fn();  // warm-up
  moa::Stopwatch clock;
  for (int i = 0; i < iters; ++i) fn();
  return clock.Seconds() / iters * 1000;
}

// The paper's top-1 cosine routing and gate of `tokens` tokens (training: noise, auxiliary loss),
// forward and backward, from the shared GEMM's output [projection | 15 rank columns]: as ATen
// operations (Route and the gate mask) and as FusedCosineGate. Prints both times and their ratio.
void GateRow(const char* name, int64_t tokens, int64_t tokens_per_sample, int64_t proj_dim,
             int iters) {
  const std::vector<int64_t> ranks = {1, 2, 4, 8};
  const int64_t experts = static_cast<int64_t>(ranks.size());
  std::vector<int64_t> column_of;
  for (int64_t e = 0; e < experts; ++e) column_of.insert(column_of.end(), ranks[e], e);
  const int64_t columns = static_cast<int64_t>(column_of.size());
  const torch::Tensor column_expert = torch::tensor(column_of, torch::kInt64);
  moa::Router router(moa::RouterOptions(proj_dim, experts).proj_dim(proj_dim));
  const torch::Tensor both_value = torch::randn({tokens, proj_dim + columns});
  const torch::Tensor weight = torch::randn({tokens, columns});
  moa::RoutingContext context;
  moa::RouteOptions route;
  route.expert_lists = false;
  // `training`: noise, the auxiliary loss and the backward; else an evaluation forward.
  auto step = [&](bool fused, bool training) {
    return [&, fused, training] {
      ++context.step;
      std::optional<torch::NoGradGuard> no_grad;
      if (!training) no_grad.emplace();
      const torch::Tensor both = both_value.clone().requires_grad_(training);
      moa::Routing routing;
      torch::Tensor gated;
      if (fused) {
        torch::Tensor noise;
        if (training) {
          noise = moa::RouterNoise(context, 0, tokens, experts, tokens_per_sample) /
                  static_cast<double>(experts);
        }
        moa::FusedGate gate = moa::FusedCosineGate(both, proj_dim, router->ScaledKeys(), noise,
                                                   column_expert, training);
        routing.clean_logits = gate.clean_logits;
        routing.clean_probs = gate.clean_probs;
        routing.load_terms = gate.load_terms;
        gated = gate.gated;
      } else {
        routing = moa::Route(router->LogitsFromProjection(both.narrow(1, 0, proj_dim)), route,
                             context, 0, tokens_per_sample, training);
        gated = both.narrow(1, proj_dim, columns) * routing.combine.index_select(1, column_expert);
      }
      if (!training) return;
      ((gated * weight).sum() + moa::ImportanceLoadLoss(routing, 1, 0.01)).backward();
      for (auto& p : router->parameters()) {
        if (p.grad().defined()) p.mutable_grad().zero_();
      }
    };
  };
  const double aten = TimeMs(step(false, true), iters), fused = TimeMs(step(true, true), iters);
  const double aten_eval = TimeMs(step(false, false), iters),
               fused_eval = TimeMs(step(true, false), iters);
  std::printf("%-28s %10.2f %10.2f %9.2fx %10.2f %10.2f %9.2fx\n", name, aten, fused, fused / aten,
              aten_eval, fused_eval, fused_eval / aten_eval);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t images = 96, tokens = 197, dim = 768;
  int iters = 5, threads = 2;
  bool gate_only = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (flag == "--images") images = v;
    if (flag == "--tokens") tokens = v;
    if (flag == "--dim") dim = v;
    if (flag == "--iters") iters = static_cast<int>(v);
    if (flag == "--threads") threads = static_cast<int>(v);
    if (flag == "--gate-only") gate_only = v != 0;
  }
  moa::ApplyThreadCount(threads);
  auto gate_rows = [&] {
    std::printf(
        "\ntop-1 cosine routing and gate alone, ms: training (noise, auxiliary loss, forward + "
        "backward), then evaluation (forward, no autograd)\n");
    std::printf("%-28s %10s %10s %10s %10s %10s %10s\n", "tokens x projection", "ATen ops", "fused",
                "ratio", "ATen eval", "fused eval", "ratio");
    GateRow("demo: 160 x 17, 64", 160 * 17, 17, 64, 8 * iters);
    GateRow("ViT-B/16: 96 x 197, 256", 96 * 197, 197, 256, 2 * iters);
  };
  if (gate_only) {
    gate_rows();
    return 0;
  }
  torch::manual_seed(0);
  const int64_t out = 3 * dim;
  const torch::Tensor x = torch::randn({images, tokens, dim});
  const torch::Tensor grad_out = torch::randn({images, tokens, out});
  auto context = std::make_shared<moa::RoutingContext>();

  auto make_linear = [&](std::shared_ptr<moa::AdapterImpl> adapter) {
    auto linear = std::make_shared<moa::AdaptableLinearImpl>(moa::AdaptableLinearOptions(dim, out));
    linear->weight.set_requires_grad(false);
    linear->bias.set_requires_grad(false);
    if (adapter) linear->set_adapter(adapter);
    linear->train();
    return linear;
  };
  auto run = [&](std::shared_ptr<moa::AdaptableLinearImpl> linear) {
    return [linear, &x, &grad_out, &context] {
      ++context->step;
      const torch::Tensor input = x.clone().requires_grad_(true);  // gradients flow to the input
      torch::Tensor y = linear->forward(input);
      torch::Tensor loss = (y * grad_out).sum();
      if (auto moa = std::dynamic_pointer_cast<moa::MoaAdapterImpl>(linear->adapter())) {
        loss = loss + moa->aux_loss();
      }
      loss.backward();
      for (auto& p : linear->parameters()) {
        if (p.grad().defined()) p.mutable_grad().zero_();
      }
    };
  };
  auto moa_layer = [&](const std::string& expert, const std::string& dispatch,
                       double kron_dropout = 0.5) {
    moa::MoaConfig config;
    config.expert = expert;
    config.dispatch = dispatch;
    config.aux_loss = true;
    config.kron_dropout = kron_dropout;
    auto rules = std::make_shared<moa::KroneckerRulesImpl>(config.phm_dim, false);
    return make_linear(std::make_shared<moa::MoaAdapterImpl>(dim, out, config, 0, context, rules));
  };

  std::printf(
      "one adapted %lld -> %lld Linear, %lld x %lld tokens, forward + backward, %d threads\n",
      static_cast<long long>(dim), static_cast<long long>(out), static_cast<long long>(images),
      static_cast<long long>(tokens), threads);
  const double frozen = TimeMs(run(make_linear(nullptr)), iters);
  const double lora = TimeMs(
      run(make_linear(std::make_shared<moa::LoraImpl>(moa::LoraOptions(dim, out, 8)))), iters);
  struct Row {
    const char* name;
    double ms;
  };
  const Row rows[] = {
      {"frozen W0 only", frozen},
      {"LoRA r=8 (baseline)", lora},
      {"MoA LoRA stacked", TimeMs(run(moa_layer("lora", "stacked")), iters)},
      {"MoA LoRA routed", TimeMs(run(moa_layer("lora", "routed")), iters)},
      {"MoA LoRA dense", TimeMs(run(moa_layer("lora", "dense")), iters)},
      {"MoA Kronecker routed", TimeMs(run(moa_layer("kronecker", "routed")), iters)},
      {"MoA Kronecker dense", TimeMs(run(moa_layer("kronecker", "dense")), iters)},
      {"MoA Kronecker, no drop", TimeMs(run(moa_layer("kronecker", "routed", 0.0)), iters)},
  };
  std::printf("%-24s %10s %14s\n", "layer", "ms", "vs LoRA r=8");
  for (const Row& row : rows)
    std::printf("%-24s %10.2f %13.2fx\n", row.name, row.ms, row.ms / lora);

  // Evaluation: forward only, eval mode, no autograd. Kronecker adapters apply H through its
  // structure there; the last row builds H and multiplies by it (what evaluation did before).
  auto evaluate = [&x](std::shared_ptr<moa::AdaptableLinearImpl> linear) {
    linear->eval();
    return [linear, &x] {
      torch::NoGradGuard no_grad;
      linear->forward(x);
    };
  };
  auto rules = std::make_shared<moa::KroneckerRulesImpl>(moa::MoaConfig().phm_dim, false);
  auto kron = std::make_shared<moa::KroneckerImpl>(moa::KroneckerOptions(dim, out, 8), rules);
  auto frozen_eval = make_linear(nullptr);
  const double eval_lora = TimeMs(
      evaluate(make_linear(std::make_shared<moa::LoraImpl>(moa::LoraOptions(dim, out, 8)))), iters);
  const Row eval_rows[] = {
      {"frozen W0 only", TimeMs(evaluate(frozen_eval), iters)},
      {"LoRA r=8 (baseline)", eval_lora},
      {"MoA LoRA stacked", TimeMs(evaluate(moa_layer("lora", "auto")), iters)},
      {"MoA Kronecker routed", TimeMs(evaluate(moa_layer("kronecker", "auto")), iters)},
      {"Kronecker r=8, x H", TimeMs(
                                 [&] {
                                   torch::NoGradGuard no_grad;
                                   frozen_eval->forward(x) + kron->Product(x);
                                 },
                                 iters)},
      {"Kronecker r=8, H built", TimeMs(
                                     [&] {
                                       torch::NoGradGuard no_grad;
                                       frozen_eval->forward(x) +
                                           torch::matmul(x, kron->UpdateMatrix(false, 0));
                                     },
                                     iters)},
  };
  std::printf("\nthe same layers in evaluation (forward, no autograd)\n");
  std::printf("%-24s %10s %14s\n", "layer", "ms", "vs LoRA r=8");
  for (const Row& row : eval_rows)
    std::printf("%-24s %10.2f %13.2fx\n", row.name, row.ms, row.ms / eval_lora);
  gate_rows();
  return 0;
}
