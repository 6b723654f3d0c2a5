#include "parallel/autograd_collectives.h"

#include <stdexcept>

namespace moa::parallel {
namespace {

void SumInPlace(torch::Tensor& t, Communicator* group) {
  const absl::Status status = group->AllReduce(t, ReduceOp::kSum);
  if (!status.ok()) throw std::runtime_error(std::string(status.message()));
}

class AllReduceSumFunction : public torch::autograd::Function<AllReduceSumFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               int64_t group_address) {
    ctx->saved_data["group"] = group_address;
    torch::Tensor out = input.detach().clone().contiguous();
    SumInPlace(out, reinterpret_cast<Communicator*>(group_address));
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* group = reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
    torch::Tensor grad = grads[0].contiguous().clone();
    SumInPlace(grad, group);
    return {grad, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor DifferentiableAllReduceSum(const torch::Tensor& tensor, Communicator* group) {
  if (group == nullptr || group->size() == 1) return tensor;
  return AllReduceSumFunction::apply(tensor, reinterpret_cast<int64_t>(group));
}

}  // namespace moa::parallel

namespace moa::parallel {
namespace {

torch::Tensor Exchange(const torch::Tensor& input, const std::vector<int64_t>& send_rows,
                       const std::vector<int64_t>& expected_rows, Communicator* group) {
  std::vector<int64_t> got;
  auto out = group->AllToAllV(input.contiguous(), send_rows, &got);
  if (!out.ok()) throw std::runtime_error(std::string(out.status().message()));
  if (got != expected_rows)
    throw std::runtime_error("all_to_all_v: peers sent other row counts than announced");
  return *out;
}

class AllToAllVFunction : public torch::autograd::Function<AllToAllVFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               std::vector<int64_t> send_rows, std::vector<int64_t> recv_rows,
                               int64_t group_address) {
    ctx->saved_data["send"] = c10::IValue(send_rows);
    ctx->saved_data["recv"] = c10::IValue(recv_rows);
    ctx->saved_data["group"] = group_address;
    return Exchange(input.detach(), send_rows, recv_rows,
                    reinterpret_cast<Communicator*>(group_address));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto send = ctx->saved_data["send"].toIntVector();
    const auto recv = ctx->saved_data["recv"].toIntVector();
    auto* group = reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
    return {Exchange(grads[0], recv, send, group), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor DifferentiableAllToAllV(const torch::Tensor& input,
                                      const std::vector<int64_t>& send_rows,
                                      const std::vector<int64_t>& recv_rows, Communicator* group) {
  return AllToAllVFunction::apply(input, send_rows, recv_rows, reinterpret_cast<int64_t>(group));
}

}  // namespace moa::parallel
