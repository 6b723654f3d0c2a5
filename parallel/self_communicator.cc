#include <numeric>

#include "parallel/communicator.h"

namespace moa::parallel {
namespace {

class SelfCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend_name() const override { return "self"; }
  absl::Status AllReduce(torch::Tensor&, ReduceOp) override { return absl::OkStatus(); }
  absl::StatusOr<torch::Tensor> AllGather(const torch::Tensor& tensor) override {
    return tensor.unsqueeze(0).clone();
  }
  absl::Status Broadcast(torch::Tensor&, int root) override {
    if (root != 0)
      return absl::InvalidArgumentError("broadcast root " + std::to_string(root) + " of 1 rank");
    return absl::OkStatus();
  }
  absl::StatusOr<torch::Tensor> AllToAllV(const torch::Tensor& input,
                                          const std::vector<int64_t>& send_rows,
                                          std::vector<int64_t>* recv_rows) override {
    if (send_rows.size() != 1 || send_rows[0] != input.size(0)) {
      return absl::InvalidArgumentError("all_to_all_v on 1 rank must send every row to itself");
    }
    if (recv_rows) *recv_rows = send_rows;
    return input.clone();
  }
  absl::Status Barrier() override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int, int) override {
    return MakeSelfCommunicator();
  }
};

}  // namespace

std::unique_ptr<Communicator> MakeSelfCommunicator() {
  return std::make_unique<SelfCommunicator>();
}

std::vector<int64_t> Offsets(const std::vector<int64_t>& counts) {
  std::vector<int64_t> offsets(counts.size(), 0);
  for (size_t j = 1; j < counts.size(); ++j) offsets[j] = offsets[j - 1] + counts[j - 1];
  return offsets;
}

}  // namespace moa::parallel
