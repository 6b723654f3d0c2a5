// Which library carries a run's collectives (parallel.backend = auto | mpi | nccl), and the NCCL
// world when it is NCCL. auto takes NCCL when the ranks compute on GPUs, one GPU each (NCCL
// refuses two ranks on one GPU), else MPI, which stages device tensors through host memory.
// The NCCL communicator implements the same Communicator interface on CUDA tensors: collectives
// run on NCCL's own stream, ordered after what the caller's current stream has queued and before
// what it queues next (CUDA events), so nothing waits on the host; CPU tensors (the
// coordinator's counts) travel through the device.
//
//   MOA_ASSIGN_OR_RETURN(Backend backend, ResolveBackend(option, device, mesh));
//   if (backend == Backend::kNccl) MOA_ASSIGN_OR_RETURN(nccl_world, MakeNcclWorld(*mpi, device));
#pragma once

#include <memory>
#include <string>

#include <absl/status/statusor.h>
#include <torch/torch.h>

#include "parallel/communicator.h"
#include "parallel/mesh_layout.h"

namespace moa::parallel {

enum class Backend { kMpi, kNccl };

/// The backend for `option` on `device`; `nccl` on the CPU or in a build without NCCL is an
/// error that says why (two ranks on one GPU: NCCL's own error when the group is made). `auto`
/// takes NCCL only when the node's ranks are no more than the GPUs each sees.
absl::StatusOr<Backend> ResolveBackend(const std::string& option, const torch::Device& device,
                                       const MeshLayout& mesh, int visible_gpus);

/// True when this build has the NCCL backend.
bool NcclAvailable();

/// An NCCL group of all ranks of `bootstrap` (which sends NCCL's unique id), on `device` (CUDA).
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclWorld(Communicator& bootstrap,
                                                            const torch::Device& device);

}  // namespace moa::parallel
