#include "moa/kronecker.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <mutex>

namespace moa {
namespace {

// Xavier-uniform with gain sqrt(2) on each 2-D slice of a (n x rows x cols) tensor.
void XavierSlices(torch::Tensor t) {
  torch::NoGradGuard no_grad;
  const double bound = std::sqrt(2.0) * std::sqrt(6.0 / static_cast<double>(t.size(1) + t.size(2)));
  t.uniform_(-bound, bound);
}

// Dropout's keep mask for H, drawn from a generator keyed by `key` on H's own device: the CPU's
// mt19937, or a GPU's Philox (a mask drawn on the host and copied would bound the GPU's step by
// the host). The same key gives the same mask on every rank of one device type and after a
// resume; a CPU mask and a GPU mask of one key differ.
torch::Tensor KeepMask(at::IntArrayRef sizes, double keep, uint64_t key,
                       const torch::Device& device) {
  if (device.is_cpu()) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(key);
    return at::empty(sizes, torch::kFloat32).bernoulli_(keep, generator);
  }
  at::Generator generator;
  {
    at::Generator device_default = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(device_default.mutex());
    generator = device_default.clone();
  }
  generator.set_current_seed(key);  // also starts the Philox offset at 0
  return at::empty(sizes, torch::TensorOptions().dtype(torch::kFloat32).device(device))
      .bernoulli_(keep, generator);
}

}  // namespace

KroneckerRulesImpl::KroneckerRulesImpl(int64_t phm_dim, bool with_unused_rule0)
    : phm_dim_(phm_dim) {
  auto init = [](std::vector<int64_t> shape) { return torch::empty(shape).uniform_(-0.01, 0.01); };
  if (with_unused_rule0) {
    register_parameter("rule0_left", init({phm_dim, phm_dim, 1}));
    register_parameter("rule0_right", init({phm_dim, 1, phm_dim}));
  }
  rule1_left = register_parameter("rule1_left", init({phm_dim, phm_dim, 1}));
  rule1_right = register_parameter("rule1_right", init({phm_dim, 1, phm_dim}));
}

torch::Tensor KroneckerRulesImpl::RuleMatrices() const {
  return torch::bmm(rule1_left, rule1_right);
}

KroneckerImpl::KroneckerImpl(const KroneckerOptions& options,
                             std::shared_ptr<KroneckerRulesImpl> rules)
    : options_(options), rules_(std::move(rules)) {
  const int64_t n = rules_->phm_dim();
  TORCH_CHECK(options.in_features() % n == 0 && options.out_features() % n == 0,
              "Kronecker adapter: moa.phm_dim ", n, " must divide in_features ",
              options.in_features(), " and out_features ", options.out_features());
  const int64_t p = options.in_features() / n, q = options.out_features() / n, r = options.rank();
  L = register_parameter("L", torch::empty({n, p, r}));
  R = register_parameter("R", torch::empty({n, r, q}));
  // Quirk kept on purpose (docs/method.md, Quirks Q3): as the reference, neither factor starts at
  // zero, so a Kronecker adapter changes the model slightly at step 0 (LoRA does not).
  XavierSlices(L);
  XavierSlices(R);
  if (options.bias()) bias = register_parameter("bias", torch::zeros({options.out_features()}));
}

torch::Tensor KroneckerImpl::BuildUpdateMatrix() const {
  const int64_t n = rules_->phm_dim();
  const int64_t p = options_.in_features() / n, q = options_.out_features() / n;
  const torch::Tensor rules = rules_->RuleMatrices().reshape({n, n * n});  // [s, (i, j)]
  const torch::Tensor factors = torch::bmm(L, R).reshape({n, p * q});      // [s, (k, l)]
  // H[i p + k, j q + l] = sum_s A_s[i, j] W_s[k, l]: the Kronecker index convention of the
  // reference, (A (x) B)[i p + k, j q + l] = A[i, j] B[k, l].
  torch::Tensor h = torch::matmul(rules.t(), factors)
                        .reshape({n, n, p, q})
                        .permute({0, 2, 1, 3})
                        .reshape({n * p, n * q});
  return h;
}

torch::Tensor KroneckerImpl::UpdateMatrix(bool training, uint64_t dropout_key) const {
  torch::Tensor h = BuildUpdateMatrix();
  // Quirk kept on purpose (docs/method.md, Quirks Q4): dropout acts on the update matrix H, not on
  // activations, with a fresh mask per expert and forward; unlike the reference the mask is keyed
  // by (seed, step, layer, expert) so it is the same on every rank and after a resume.
  if (training && options_.dropout() > 0) {
    const torch::Tensor keep =
        KeepMask(h.sizes(), 1.0 - options_.dropout(), dropout_key, h.device());
    h = h * keep.to(h.scalar_type()) / (1.0 - options_.dropout());
  }
  return h;
}

torch::Tensor KroneckerImpl::Product(const torch::Tensor& x) const {
  const int64_t n = rules_->phm_dim();
  const int64_t p = options_.in_features() / n;                     // q, below, is out_features / n
  const torch::Tensor rows = x.reshape({-1, n, p});                 // X[t, i, k] = x[t, i p + k]
  const torch::Tensor left = rules_->rule1_left.reshape({n, n});    // a[s, i]
  const torch::Tensor right = rules_->rule1_right.reshape({n, n});  // b[s, j]
  // (x H)[j q + l] = sum_s b[s, j] sum_k (sum_i a[s, i] X[i, k]) (L_s R_s)[k, l], in three steps
  // that keep the tokens outermost (no transpose of a token-sized tensor): t = a X per token,
  // u[t, s] = t[t, s] L_s R_s (batched over s), y[t] = b^T u[t] per token.
  const torch::Tensor t = torch::matmul(left, rows);  // (tokens, n, p)
  const torch::Tensor u = torch::einsum("tsk,skl->tsl", {t, torch::bmm(L, R)});
  const torch::Tensor y = torch::matmul(right.t(), u);  // (tokens, n, q)
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = options_.out_features();
  return y.reshape(shape);
}

torch::Tensor KroneckerImpl::Apply(const torch::Tensor& x, bool training,
                                   uint64_t dropout_key) const {
  if (training && options_.dropout() > 0) return torch::matmul(x, UpdateMatrix(true, dropout_key));
  return Product(x);
}

torch::Tensor KroneckerImpl::Delta(const torch::Tensor& x) {
  torch::Tensor y = Product(x);
  return bias.defined() ? y + bias : y;
}

}  // namespace moa
