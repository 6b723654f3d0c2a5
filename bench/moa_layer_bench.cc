// One adapted Linear's forward and backward at ViT-B/16 token counts (96 images x 197 tokens x
// 768, the qkv layer 768 -> 2304, frozen W0): a single rank-8 LoRA (the baseline, measured in
// the same run), the MoA layer with stacked, routed and the reference's dense dispatch
// (4 LoRA experts of ranks 1, 2, 4, 8, cosine router, noise, load-balancing loss), and the same
// with Kronecker experts (with the reference's dropout on H, and without, which never builds H).
// Prints ms per forward+backward and the ratio to the LoRA layer; then the evaluation forward
// (no autograd) of the same layers, and one Kronecker adapter's x H through H's structure against
// building H and multiplying by it.
//
// usage: moa_layer_bench [--images 96] [--tokens 197] [--dim 768] [--iters 5] [--threads 2]
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "common/threads.h"
#include "common/timer.h"
#include "moa/adapters.h"
#include "moa/moa_layer.h"

namespace {

double TimeMs(const std::function<void()>& fn, int iters) {
  fn();  // warm-up
  moa::Stopwatch clock;
  for (int i = 0; i < iters; ++i) fn();
  return clock.Seconds() / iters * 1000;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t images = 96, tokens = 197, dim = 768;
  int iters = 5, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (flag == "--images") images = v;
    if (flag == "--tokens") tokens = v;
    if (flag == "--dim") dim = v;
    if (flag == "--iters") iters = static_cast<int>(v);
    if (flag == "--threads") threads = static_cast<int>(v);
  }
  moa::ApplyThreadCount(threads);
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
  return 0;
}
