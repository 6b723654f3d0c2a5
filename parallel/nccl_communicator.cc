#include "parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>

namespace moa::parallel {
namespace {

ncclDataType_t ToNccl(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kFloat16:
      return ncclFloat16;
    case DataType::kBFloat16:
      return ncclBfloat16;
    case DataType::kInt64:
      return ncclInt64;
    case DataType::kInt32:
      return ncclInt32;
    case DataType::kUInt8:
      return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t ToNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAverage:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

#define MOA_NCCL_RETURN_IF_ERROR(expr) \
  do {                                 \
    absl::Status status_ = (expr);     \
    if (!status_.ok()) return status_; \
  } while (0)

absl::Status CudaStatus(cudaError_t code, const char* what) {
  if (code == cudaSuccess) return absl::OkStatus();
  return absl::UnavailableError(std::string("CUDA ") + what + ": " + cudaGetErrorString(code));
}

}  // namespace

size_t SizeOf(DataType type) {
  switch (type) {
    case DataType::kFloat64:
    case DataType::kInt64:
      return 8;
    case DataType::kFloat32:
    case DataType::kInt32:
      return 4;
    case DataType::kFloat16:
    case DataType::kBFloat16:
      return 2;
    case DataType::kUInt8:
      return 1;
  }
  return 1;
}

std::string NcclCommunicator::Version() {
  int code = 0;
  ncclGetVersion(&code);
  return std::to_string(code / 10000) + "." + std::to_string((code / 100) % 100) + "." +
         std::to_string(code % 100);
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    int rank, int size, int device, const BroadcastBytes& bootstrap) {
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->rank_ = rank;
  c->size_ = size;
  c->device_ = device;
  if (auto s = CudaStatus(cudaSetDevice(device), "cudaSetDevice"); !s.ok()) return s;
  ncclUniqueId id;
  if (rank == 0) {
    if (auto s = c->Check(ncclGetUniqueId(&id), "ncclGetUniqueId"); !s.ok()) return s;
  }
  if (auto s = bootstrap(&id, sizeof(id), 0); !s.ok()) return s;
  cudaStream_t stream;
  if (auto s = CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
      !s.ok()) {
    return s;
  }
  c->stream_ = stream;
  ncclComm_t comm;
  if (auto s = c->Check(ncclCommInitRank(&comm, size, id, rank), "ncclCommInitRank"); !s.ok())
    return s;
  c->comm_ = comm;
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) {
    // After a failed operation the communicator may be stuck: abort rather than destroy.
    if (failed_) {
      ncclCommAbort(static_cast<ncclComm_t>(comm_));
    } else {
      ncclCommDestroy(static_cast<ncclComm_t>(comm_));
    }
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

absl::Status NcclCommunicator::Check(int result, const char* op) const {
  if (result == ncclSuccess) return absl::OkStatus();
  const_cast<NcclCommunicator*>(this)->failed_ = true;
  return absl::UnavailableError(std::string("NCCL ") + op + " failed on rank " +
                                std::to_string(rank_) + " (device " + std::to_string(device_) +
                                "): " + ncclGetErrorString(static_cast<ncclResult_t>(result)));
}

absl::Status NcclCommunicator::Wait(const char* op) const {
  if (!blocking_) {
    // Queued only: report an error NCCL has already seen, without waiting for the stream.
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(static_cast<ncclComm_t>(comm_), &async);
    return Check(async, op);
  }
  return CudaStatus(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)), op);
}

absl::Status NcclCommunicator::AllReduce(void* buffer, size_t count, DataType type, ReduceOp op) {
  auto s = Check(ncclAllReduce(buffer, buffer, count, ToNccl(type), ToNccl(op),
                               static_cast<ncclComm_t>(comm_), static_cast<cudaStream_t>(stream_)),
                 "all_reduce");
  return s.ok() ? Wait("all_reduce") : s;
}

absl::Status NcclCommunicator::AllGather(const void* send, void* recv, size_t count,
                                         DataType type) {
  auto s = Check(ncclAllGather(send, recv, count, ToNccl(type), static_cast<ncclComm_t>(comm_),
                               static_cast<cudaStream_t>(stream_)),
                 "all_gather");
  return s.ok() ? Wait("all_gather") : s;
}

absl::Status NcclCommunicator::Broadcast(void* buffer, size_t count, DataType type, int root) {
  if (root < 0 || root >= size_) return absl::InvalidArgumentError("broadcast root out of range");
  auto s = Check(ncclBroadcast(buffer, buffer, count, ToNccl(type), root,
                               static_cast<ncclComm_t>(comm_), static_cast<cudaStream_t>(stream_)),
                 "broadcast");
  return s.ok() ? Wait("broadcast") : s;
}

absl::Status NcclCommunicator::EnsureScratch() {
  // One device buffer per group, allocated once: (size + 1) x size counts, also the barrier's
  // one value. cudaMalloc and cudaFree inside a step would synchronise the whole device.
  if (scratch_ != nullptr) return absl::OkStatus();
  void* buffer = nullptr;
  MOA_NCCL_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  MOA_NCCL_RETURN_IF_ERROR(CudaStatus(
      cudaMalloc(&buffer, sizeof(int64_t) * static_cast<size_t>(size_ + 1) * size_), "cudaMalloc"));
  scratch_ = buffer;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> NcclCommunicator::RecvRows(
    const std::vector<int64_t>& send_rows) {
  if (static_cast<int>(send_rows.size()) != size_) {
    return absl::InvalidArgumentError("all_to_all_v: " + std::to_string(send_rows.size()) +
                                      " send counts for " + std::to_string(size_) + " ranks");
  }
  MOA_NCCL_RETURN_IF_ERROR(EnsureScratch());
  // Counts first: all-gather every rank's send table, then read this rank's column. Everything
  // runs on the communicator's stream, which alone the host waits for.
  auto* device_counts = static_cast<int64_t*>(scratch_);
  const size_t bytes = sizeof(int64_t) * size_;
  auto stream = static_cast<cudaStream_t>(stream_);
  std::vector<int64_t> table(static_cast<size_t>(size_) * size_);
  absl::Status status = CudaStatus(
      cudaMemcpyAsync(device_counts, send_rows.data(), bytes, cudaMemcpyHostToDevice, stream),
      "cudaMemcpyAsync");
  if (status.ok())
    status = AllGather(device_counts, device_counts + size_, size_, DataType::kInt64);
  if (status.ok()) {
    status = CudaStatus(cudaMemcpyAsync(table.data(), device_counts + size_, bytes * size_,
                                        cudaMemcpyDeviceToHost, stream),
                        "cudaMemcpyAsync");
  }
  if (status.ok()) status = CudaStatus(cudaStreamSynchronize(stream), "all_to_all_v counts");
  if (!status.ok()) return status;
  std::vector<int64_t> recv_rows(size_);
  for (int src = 0; src < size_; ++src)
    recv_rows[src] = table[static_cast<size_t>(src) * size_ + rank_];
  return recv_rows;
}

absl::Status NcclCommunicator::AllToAllV(const void* send, const std::vector<int64_t>& send_rows,
                                         void* recv, const std::vector<int64_t>& recv_rows,
                                         size_t row_elements, DataType type) {
  if (static_cast<int>(send_rows.size()) != size_ || static_cast<int>(recv_rows.size()) != size_) {
    return absl::InvalidArgumentError("all_to_all_v: count tables must have one entry per rank");
  }
  const size_t row_bytes = row_elements * SizeOf(type);
  const auto* send_bytes = static_cast<const char*>(send);
  auto* recv_bytes = static_cast<char*>(recv);
  auto comm = static_cast<ncclComm_t>(comm_);
  auto stream = static_cast<cudaStream_t>(stream_);
  // One group of point-to-point transfers, skipping empty ones (as nccl-tests' alltoall).
  ncclGroupStart();
  size_t send_offset = 0, recv_offset = 0;
  for (int peer = 0; peer < size_; ++peer) {
    if (send_rows[peer] > 0) {
      ncclSend(send_bytes + send_offset, send_rows[peer] * row_elements, ToNccl(type), peer, comm,
               stream);
    }
    if (recv_rows[peer] > 0) {
      ncclRecv(recv_bytes + recv_offset, recv_rows[peer] * row_elements, ToNccl(type), peer, comm,
               stream);
    }
    send_offset += send_rows[peer] * row_bytes;
    recv_offset += recv_rows[peer] * row_bytes;
  }
  auto s = Check(ncclGroupEnd(), "all_to_all_v");
  return s.ok() ? Wait("all_to_all_v") : s;
}

absl::Status NcclCommunicator::Barrier() {
  MOA_NCCL_RETURN_IF_ERROR(EnsureScratch());
  absl::Status status = AllReduce(scratch_, 1, DataType::kFloat32, ReduceOp::kSum);
  if (status.ok()) {
    status = CudaStatus(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)), "barrier");
  }
  return status;
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Split(int color, int key) {
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->device_ = device_;
  c->rank_ = rank_;
  if (auto s = CudaStatus(cudaSetDevice(device_), "cudaSetDevice"); !s.ok()) return s;
  ncclComm_t sub;
  if (auto s =
          Check(ncclCommSplit(static_cast<ncclComm_t>(comm_), color, key, &sub, nullptr), "split");
      !s.ok()) {
    return s;
  }
  c->comm_ = sub;
  c->blocking_ = blocking_;
  ncclCommUserRank(sub, &c->rank_);
  ncclCommCount(sub, &c->size_);
  cudaStream_t stream;
  if (auto s = CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
      !s.ok())
    return s;
  c->stream_ = stream;
  return c;
}

}  // namespace moa::parallel
