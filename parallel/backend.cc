#include "parallel/backend.h"

#include <cstring>
#include <functional>

#include "common/status_macros.h"

#if MOA_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "parallel/nccl_communicator.h"
#endif

namespace moa::parallel {

#if MOA_WITH_CUDA
namespace {

absl::StatusOr<DataType> NcclType(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return DataType::kFloat32;
    case torch::kFloat64:
      return DataType::kFloat64;
    case torch::kFloat16:
      return DataType::kFloat16;
    case torch::kBFloat16:
      return DataType::kBFloat16;
    case torch::kInt64:
      return DataType::kInt64;
    case torch::kInt32:
      return DataType::kInt32;
    case torch::kUInt8:
      return DataType::kUInt8;
    default:
      return absl::InvalidArgumentError(std::string("NCCL communicator: unsupported dtype ") +
                                        std::string(c10::toString(t.scalar_type())));
  }
}

absl::Status CudaCheck(cudaError_t code, const char* what) {
  if (code == cudaSuccess) return absl::OkStatus();
  return absl::UnavailableError(std::string("CUDA ") + what + ": " + cudaGetErrorString(code));
}

class NcclTensorCommunicator : public Communicator {
 public:
  explicit NcclTensorCommunicator(std::unique_ptr<NcclCommunicator> nccl)
      : nccl_(std::move(nccl)),
        device_(torch::kCUDA, static_cast<c10::DeviceIndex>(nccl_->device())) {
    nccl_->set_blocking(false);
    // The events belong to the group's device, whichever device the calling thread is on.
    c10::cuda::CUDAGuard guard(device_);
    TORCH_CHECK(cudaEventCreateWithFlags(&queued_, cudaEventDisableTiming) == cudaSuccess &&
                    cudaEventCreateWithFlags(&finished_, cudaEventDisableTiming) == cudaSuccess,
                "NCCL communicator: cannot create CUDA events on GPU ", device_.index());
  }
  ~NcclTensorCommunicator() override {
    cudaEventDestroy(queued_);
    cudaEventDestroy(finished_);
  }
  int rank() const override { return nccl_->rank(); }
  int size() const override { return nccl_->size(); }
  std::string backend_name() const override { return "nccl"; }

  absl::Status AllReduce(torch::Tensor& tensor, ReduceOp op) override {
    if (!tensor.is_cuda()) {
      return ThroughDevice(tensor,
                           [&](torch::Tensor& on_device) { return AllReduce(on_device, op); });
    }
    MOA_RETURN_IF_ERROR(CheckLayout(tensor, "all_reduce"));
    MOA_ASSIGN_OR_RETURN(DataType type, NcclType(tensor));
    return Ordered({tensor}, [&] {
      return nccl_->AllReduce(tensor.data_ptr(), static_cast<size_t>(tensor.numel()), type, op);
    });
  }

  absl::Status AllReduceDeferred(torch::Tensor& tensor, ReduceOp op) override {
    if (!tensor.is_cuda()) return AllReduce(tensor, op);
    MOA_RETURN_IF_ERROR(CheckLayout(tensor, "all_reduce"));
    MOA_ASSIGN_OR_RETURN(DataType type, NcclType(tensor));
    return Ordered(
        {tensor},
        [&] {
          return nccl_->AllReduce(tensor.data_ptr(), static_cast<size_t>(tensor.numel()), type, op);
        },
        /*compute_waits=*/false);
  }

  absl::Status WaitForDeferred() override {
    c10::cuda::CUDAGuard guard(device_);
    return ComputeWaitsForNccl();
  }

  absl::StatusOr<torch::Tensor> AllGather(const torch::Tensor& tensor) override {
    if (!tensor.is_cuda()) {
      MOA_ASSIGN_OR_RETURN(torch::Tensor gathered, AllGather(tensor.to(device_)));
      return gathered.to(tensor.device());
    }
    const torch::Tensor input = tensor.contiguous();
    MOA_ASSIGN_OR_RETURN(DataType type, NcclType(input));
    std::vector<int64_t> shape = input.sizes().vec();
    shape.insert(shape.begin(), size());
    torch::Tensor out = torch::empty(shape, input.options());
    MOA_RETURN_IF_ERROR(Ordered({input, out}, [&] {
      return nccl_->AllGather(input.data_ptr(), out.data_ptr(), static_cast<size_t>(input.numel()),
                              type);
    }));
    return out;
  }

  absl::Status Broadcast(torch::Tensor& tensor, int root) override {
    if (!tensor.is_cuda()) {
      return ThroughDevice(tensor,
                           [&](torch::Tensor& on_device) { return Broadcast(on_device, root); });
    }
    MOA_RETURN_IF_ERROR(CheckLayout(tensor, "broadcast"));
    MOA_ASSIGN_OR_RETURN(DataType type, NcclType(tensor));
    return Ordered({tensor}, [&] {
      return nccl_->Broadcast(tensor.data_ptr(), static_cast<size_t>(tensor.numel()), type, root);
    });
  }

  absl::StatusOr<torch::Tensor> AllToAllV(const torch::Tensor& input_tensor,
                                          const std::vector<int64_t>& send_rows,
                                          std::vector<int64_t>* recv_rows_out) override {
    if (!input_tensor.is_cuda()) {
      MOA_ASSIGN_OR_RETURN(torch::Tensor received,
                           AllToAllV(input_tensor.to(device_), send_rows, recv_rows_out));
      return received.to(input_tensor.device());
    }
    const torch::Tensor input = input_tensor.contiguous();
    int64_t total = 0;
    for (int64_t r : send_rows) total += r;
    if (static_cast<int>(send_rows.size()) != size() || total != input.size(0)) {
      return absl::InvalidArgumentError("all_to_all_v: send counts do not match the input's " +
                                        std::to_string(input.size(0)) + " rows over " +
                                        std::to_string(size()) + " ranks");
    }
    MOA_ASSIGN_OR_RETURN(DataType type, NcclType(input));
    // Counts first (their exchange waits on the host: the receive buffer's size depends on them).
    MOA_ASSIGN_OR_RETURN(std::vector<int64_t> recv_rows, nccl_->RecvRows(send_rows));
    int64_t row = 1, received = 0;
    for (int64_t d = 1; d < input.dim(); ++d) row *= input.size(d);
    for (int64_t r : recv_rows) received += r;
    std::vector<int64_t> shape = input.sizes().vec();
    shape[0] = received;
    torch::Tensor out = torch::empty(shape, input.options());
    MOA_RETURN_IF_ERROR(Ordered({input, out}, [&] {
      return nccl_->AllToAllV(input.data_ptr(), send_rows, out.data_ptr(), recv_rows,
                              static_cast<size_t>(row), type);
    }));
    if (recv_rows_out) *recv_rows_out = recv_rows;
    return out;
  }

  absl::Status Barrier() override {
    c10::cuda::CUDAGuard guard(device_);
    MOA_RETURN_IF_ERROR(
        CudaCheck(cudaStreamSynchronize(c10::cuda::getCurrentCUDAStream().stream()), "barrier"));
    return nccl_->Barrier();
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override {
    MOA_ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> sub, nccl_->Split(color, key));
    return std::unique_ptr<Communicator>(new NcclTensorCommunicator(std::move(sub)));
  }

 private:
  static absl::Status CheckLayout(const torch::Tensor& t, const char* op) {
    if (!t.is_contiguous()) {
      return absl::InvalidArgumentError(std::string("NCCL ") + op + " needs a contiguous tensor");
    }
    return absl::OkStatus();
  }

  // `op` on a device copy of a host tensor, copied back in place (the copy back waits for it).
  template <typename Op>
  absl::Status ThroughDevice(torch::Tensor& tensor, Op&& op) {
    torch::Tensor on_device = tensor.to(device_).contiguous();
    MOA_RETURN_IF_ERROR(op(on_device));
    tensor.copy_(on_device);
    return absl::OkStatus();
  }

  // Queues `op` on NCCL's stream after everything queued so far on the caller's current stream,
  // makes that stream wait for it (unless `compute_waits` is false: WaitForDeferred does it
  // later), and tells the caching allocator that `tensors` are in use on NCCL's stream, so their
  // memory is not handed out again before the collective is done.
  absl::Status Ordered(std::initializer_list<torch::Tensor> tensors,
                       const std::function<absl::Status()>& op, bool compute_waits = true) {
    c10::cuda::CUDAGuard guard(device_);
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(device_.index());
    auto nccl_stream = static_cast<cudaStream_t>(nccl_->stream());
    MOA_RETURN_IF_ERROR(CudaCheck(cudaEventRecord(queued_, compute.stream()), "event record"));
    MOA_RETURN_IF_ERROR(CudaCheck(cudaStreamWaitEvent(nccl_stream, queued_, 0), "stream wait"));
    MOA_RETURN_IF_ERROR(op());
    if (compute_waits) MOA_RETURN_IF_ERROR(ComputeWaitsForNccl());
    const c10::cuda::CUDAStream on_nccl =
        c10::cuda::getStreamFromExternal(nccl_stream, device_.index());
    for (const torch::Tensor& t : tensors) {
      if (t.numel() > 0) {
        c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), on_nccl);
      }
    }
    return absl::OkStatus();
  }

  // Makes the current compute stream wait for everything queued on NCCL's stream so far (that
  // stream runs in order, so its newest event follows every collective on it). Under a CUDAGuard
  // for device_.
  absl::Status ComputeWaitsForNccl() {
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(device_.index());
    MOA_RETURN_IF_ERROR(CudaCheck(
        cudaEventRecord(finished_, static_cast<cudaStream_t>(nccl_->stream())), "event record"));
    return CudaCheck(cudaStreamWaitEvent(compute.stream(), finished_, 0), "stream wait");
  }

  std::unique_ptr<NcclCommunicator> nccl_;
  torch::Device device_;
  cudaEvent_t queued_ = nullptr;
  cudaEvent_t finished_ = nullptr;
};

}  // namespace

bool NcclAvailable() { return true; }

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclWorld(Communicator& bootstrap,
                                                            const torch::Device& device) {
  if (!device.is_cuda()) {
    return absl::InvalidArgumentError("the NCCL backend needs ranks on GPUs");
  }
  auto send_id = [&](void* data, size_t bytes, int root) -> absl::Status {
    torch::Tensor buffer = torch::empty({static_cast<int64_t>(bytes)}, torch::kUInt8);
    if (bootstrap.rank() == root) std::memcpy(buffer.data_ptr(), data, bytes);
    MOA_RETURN_IF_ERROR(bootstrap.Broadcast(buffer, root));
    std::memcpy(data, buffer.data_ptr(), bytes);
    return absl::OkStatus();
  };
  MOA_ASSIGN_OR_RETURN(
      std::unique_ptr<NcclCommunicator> nccl,
      NcclCommunicator::Create(bootstrap.rank(), bootstrap.size(), device.index(), send_id));
  return std::unique_ptr<Communicator>(new NcclTensorCommunicator(std::move(nccl)));
}

#else

bool NcclAvailable() { return false; }

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclWorld(Communicator&, const torch::Device&) {
  return absl::UnimplementedError("this moa was built without NCCL (LibTorch without CUDA)");
}

#endif

absl::StatusOr<Backend> ResolveBackend(const std::string& option, const torch::Device& device,
                                       const MeshLayout& mesh, int visible_gpus) {
  if (option == "mpi") return Backend::kMpi;
  if (option != "auto" && option != "nccl") {
    return absl::InvalidArgumentError("parallel.backend = " + option +
                                      " is not one of auto, mpi, nccl");
  }
  // auto takes NCCL only where every rank of a node can have a GPU of its own among those it
  // sees: NCCL cannot put two ranks of a group on one device.
  const bool own_gpu = device.is_cuda() && mesh.local_size <= visible_gpus;
  if (option == "auto") {
    return own_gpu && NcclAvailable() && mesh.world_size > 1 ? Backend::kNccl : Backend::kMpi;
  }
  if (!NcclAvailable()) {
    return absl::FailedPreconditionError(
        "parallel.backend = nccl, but this moa was built "
        "without NCCL; use parallel.backend = mpi");
  }
  if (!device.is_cuda()) {
    return absl::InvalidArgumentError(
        "parallel.backend = nccl needs GPUs (parallel.device is cpu or no GPU is visible); use "
        "parallel.backend = mpi");
  }
  // Ranks that each see only their own GPU (Slurm's --gpus-per-task) cannot be told apart from
  // ranks sharing one here; NCCL itself refuses a GPU shared by two ranks of a group.
  return Backend::kNccl;
}

}  // namespace moa::parallel
