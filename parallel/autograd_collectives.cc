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
