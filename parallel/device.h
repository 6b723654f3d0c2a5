// Which device a rank computes on, and what that device is. parallel.device = auto takes a GPU
// when one is visible, cpu never does, cuda requires one; rank r takes GPU local_rank % count
// (Open MPI's and Slurm's local-rank variables, through MeshLayout). DescribeDevice reports what
// env.json records per rank: device name, memory, driver, CUDA and NCCL versions.
//
//   MOA_ASSIGN_OR_RETURN(torch::Device device, parallel::SelectDevice("auto", mesh));
//   model->to(device);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <absl/status/statusor.h>
#include <torch/torch.h>

#include "parallel/mesh_layout.h"

namespace moa::parallel {

/// GPUs this process sees (0 without a CUDA driver or device).
int VisibleGpus();

/// `host` (a CPU tensor) on `device`. For a GPU the copy goes through pinned memory and is queued
/// on the current stream without the host waiting for it (a plain copy from pageable memory
/// waits); elsewhere it is `host.to(device)`.
torch::Tensor ToDeviceAsync(const torch::Tensor& host, const torch::Device& device);

/// `values` as an int64 index tensor on `device` (through ToDeviceAsync).
torch::Tensor IndicesOn(const std::vector<int64_t>& values, const torch::Device& device);

/// The device for `option` (auto, cpu, cuda) on this rank; with a GPU it also becomes the
/// process's current CUDA device. `cuda` without a visible GPU is an error naming rank and host.
absl::StatusOr<torch::Device> SelectDevice(const std::string& option, const MeshLayout& mesh);

struct DeviceReport {
  std::string type;          // "cpu" or "cuda"
  int64_t index = -1;        // the GPU's ordinal, -1 on the CPU
  std::string name;          // e.g. "NVIDIA H200"; the CPU model on the CPU
  int64_t memory_bytes = 0;  // the GPU's memory; the host's on the CPU
  std::string driver;        // CUDA driver version, e.g. "13.0"; empty on the CPU
  std::string cuda;          // CUDA runtime version LibTorch runs with; empty without CUDA
  std::string nccl;          // NCCL version; empty without NCCL
};
DeviceReport DescribeDevice(const torch::Device& device);

/// Whether this CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX on x86, BF16 on Arm), as
/// LibTorch's CPU detection reports them. Without them LibTorch's bf16 matrix products fall back
/// to scalar code, about 85x slower than fp32 on an AVX2 machine (README, Figures).
bool CpuHasBf16MatrixUnits();

/// Bytes the caching allocator had in use at most on `device` since the last reset (GPU), or the
/// process's peak resident set (CPU).
int64_t PeakMemoryBytes(const torch::Device& device);

/// Starts the GPU allocator's peak afresh (the CPU's peak resident set cannot be reset).
void ResetPeakMemory(const torch::Device& device);

/// TF32 in cuDNN convolutions only when `allow_tf32` (never in cuBLAS matrix products); with
/// `deterministic`, deterministic kernels everywhere, cuBLAS's and the GPU scatters' included
/// (an operation without one then fails rather than differ between runs).
void SetKernelPolicy(bool allow_tf32, bool deterministic);

/// Machine name for messages and env.json.
std::string Hostname();

}  // namespace moa::parallel
