// The NCCL implementation of the collectives, for GPU memory (docs/architecture.md, Devices and
// backends). It uses only the CUDA runtime, NCCL and raw device pointers, on a stream of its own,
// so it links without a CUDA build of LibTorch. The NCCL unique id is broadcast by a bootstrap
// callback (MPI in a job). Built only when LibTorch is a CUDA build (MOA_WITH_NCCL in the top-level
// CMakeLists.txt). Every call enqueues on the communicator's stream and, unless
// set_blocking(false), waits for it before returning; it must be called by all ranks of the group,
// in the same order. The Communicator interface on CUDA tensors (NcclTensorCommunicator in
// backend.cc, made by MakeNcclWorld) uses it without blocking.
//
//   auto nccl = NcclCommunicator::Create(rank, size, /*device=*/local_rank, broadcast_bytes);
//   MOA_RETURN_IF_ERROR((*nccl)->AllReduce(device_ptr, count, DataType::kFloat32, ReduceOp::kSum));
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include "parallel/reduce_op.h"

namespace moa::parallel {

enum class DataType { kFloat32, kFloat64, kFloat16, kBFloat16, kInt64, kInt32, kUInt8 };
size_t SizeOf(DataType type);

class NcclCommunicator {
 public:
  /// Broadcasts `bytes` at `data` (host memory) from `root` to every rank of the group.
  using BroadcastBytes = std::function<absl::Status(void* data, size_t bytes, int root)>;

  /// Creates the group on CUDA device `device`: rank 0 makes the unique id, `bootstrap` sends it.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(int rank, int size, int device,
                                                                  const BroadcastBytes& bootstrap);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }
  /// The stream every collective runs on (owned by this object).
  void* stream() const { return stream_; }
  /// false: calls return once queued on stream() (errors NCCL saw already are still reported);
  /// the caller orders other streams against it. Split() groups inherit the setting.
  void set_blocking(bool blocking) { blocking_ = blocking; }

  absl::Status AllReduce(void* buffer, size_t count, DataType type, ReduceOp op);
  /// recv holds size() x count elements, rank-major.
  absl::Status AllGather(const void* send, void* recv, size_t count, DataType type);
  absl::Status Broadcast(void* buffer, size_t count, DataType type, int root);
  /// Rows of `row_elements` elements: send_rows[j] rows go to rank j (consecutive in `send`);
  /// the counts travel first and `recv_rows` receives them; `recv` must hold their sum.
  /// RecvRows() alone exchanges the counts so a caller can size `recv`.
  absl::StatusOr<std::vector<int64_t>> RecvRows(const std::vector<int64_t>& send_rows);
  absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_rows, void* recv,
                         const std::vector<int64_t>& recv_rows, size_t row_elements, DataType type);
  absl::Status Barrier();
  /// ncclCommSplit: ranks with the same color form a group, ordered by key.
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> Split(int color, int key);

  /// NCCL's version, e.g. "2.28.9".
  static std::string Version();

 private:
  NcclCommunicator() = default;
  absl::Status Check(int nccl_result, const char* op) const;
  absl::Status Wait(const char* op) const;
  absl::Status EnsureScratch();

  void* comm_ = nullptr;     // ncclComm_t
  void* stream_ = nullptr;   // cudaStream_t
  void* scratch_ = nullptr;  // device buffer for count exchanges and barriers
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  bool failed_ = false;
  bool blocking_ = true;
};

}  // namespace moa::parallel
