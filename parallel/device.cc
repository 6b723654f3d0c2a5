#include "parallel/device.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <ATen/cpu/Utils.h>
#include <torch/cuda.h>

#if MOA_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace moa::parallel {
namespace {

#if MOA_WITH_CUDA
// The allocator's statistics are per GPU: a device without an index means the current one. CUDA
// is initialised first, as the allocator's statistics are only there once it is.
c10::DeviceIndex CudaIndex(const torch::Device& device) {
  at::globalContext().lazyInitDevice(c10::DeviceType::CUDA);
  return device.has_index() ? device.index() : c10::cuda::current_device();
}
#endif

std::string CudaVersionText(int version) {
  return std::to_string(version / 1000) + "." + std::to_string((version % 1000) / 10);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "cpu";
}

}  // namespace

std::string Hostname() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

torch::Tensor ToDeviceAsync(const torch::Tensor& host, const torch::Device& device) {
  if (!device.is_cuda() || !host.device().is_cpu()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

torch::Tensor IndicesOn(const std::vector<int64_t>& values, const torch::Device& device) {
  return ToDeviceAsync(torch::tensor(values, torch::kInt64), device);
}

int VisibleGpus() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

absl::StatusOr<torch::Device> SelectDevice(const std::string& option, const MeshLayout& mesh) {
  if (option == "cpu") return torch::Device(torch::kCPU);
  if (option != "auto" && option != "cuda") {
    return absl::InvalidArgumentError("parallel.device = " + option +
                                      " is not one of auto, cpu, cuda");
  }
  const int gpus = VisibleGpus();
  if (gpus == 0) {
    if (option == "auto") return torch::Device(torch::kCPU);
    return absl::FailedPreconditionError(
        "parallel.device = cuda, but rank " + std::to_string(mesh.rank) + " on " + Hostname() +
        " sees no GPU (no CUDA driver, or CUDA_VISIBLE_DEVICES hides them); use "
        "parallel.device = cpu or auto");
  }
  const auto index = static_cast<c10::DeviceIndex>(mesh.local_rank % gpus);
#if MOA_WITH_CUDA
  if (cudaSetDevice(index) != cudaSuccess) {
    return absl::UnavailableError("rank " + std::to_string(mesh.rank) + " on " + Hostname() +
                                  " cannot use GPU " + std::to_string(index));
  }
#endif
  return torch::Device(torch::kCUDA, index);
}

DeviceReport DescribeDevice(const torch::Device& device) {
  DeviceReport report;
  report.type = device.is_cuda() ? "cuda" : "cpu";
#if MOA_WITH_CUDA
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) report.cuda = CudaVersionText(runtime);
  int nccl = 0;
  if (ncclGetVersion(&nccl) == ncclSuccess) {
    report.nccl = std::to_string(nccl / 10000) + "." + std::to_string((nccl % 10000) / 100) + "." +
                  std::to_string(nccl % 100);
  }
  if (device.is_cuda()) {
    report.index = device.index();
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, device.index()) == cudaSuccess) {
      report.name = properties.name;
      report.memory_bytes = static_cast<int64_t>(properties.totalGlobalMem);
    }
    int driver = 0;
    if (cudaDriverGetVersion(&driver) == cudaSuccess) report.driver = CudaVersionText(driver);
    return report;
  }
#endif
  report.name = CpuModel();
  report.memory_bytes = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  return report;
}

bool CpuHasBf16MatrixUnits() {
  const auto capabilities = at::cpu::get_cpu_capabilities();
  for (const char* flag : {"avx512_bf16", "amx_bf16", "bf16", "sve_bf16"}) {
    const auto found = capabilities.find(flag);
    if (found != capabilities.end() && found->second.isBool() && found->second.toBool()) {
      return true;
    }
  }
  return false;
}

int64_t PeakMemoryBytes(const torch::Device& device) {
#if MOA_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(CudaIndex(device));
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
        .peak;
  }
#endif
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // ru_maxrss is in KiB
}

void ResetPeakMemory([[maybe_unused]] const torch::Device& device) {
#if MOA_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(CudaIndex(device));
#endif
}

void SetKernelPolicy(bool allow_tf32, bool deterministic) {
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(allow_tf32);
  // Both ways: a process that trains twice (the tests, a sweep's in-process runs) gets each run's
  // own policy, not the last deterministic one's.
  at::globalContext().setDeterministicAlgorithms(deterministic, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(deterministic);
  at::globalContext().setBenchmarkCuDNN(false);
  // cuBLAS reads this at its first use in the process: `moa train` calls this before any GPU
  // work; a process that used cuBLAS before must have it in its environment from the start.
  if (deterministic) setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
}

}  // namespace moa::parallel
