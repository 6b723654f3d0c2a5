// The communicators of a run's process mesh (docs/architecture.md, Interfaces): the world every
// collective of the run goes through (the launcher's MPI world, or an NCCL world over it), and
// every sub-group, made once, in one order on every rank, and handed out by role:
//
//   world            all ranks: losses, evaluation, router statistics, replica checks
//   gradients        all ranks again, used only by the shared-parameter gradient synchronizer
//                    (which may run collectives on its own thread)
//   ep_group         the ep ranks with this dp rank: sharded experts' token exchange (ep > 1)
//   expert_replicas  the dp ranks with this ep rank: a held expert's copies (ep > 1)
//
//   MOA_ASSIGN_OR_RETURN(std::unique_ptr<Mesh> mesh,
//                        Mesh::Create(layout, launcher_world, Backend::kMpi, device));
//   mesh->world().AllReduce(loss, ReduceOp::kSum);
#pragma once

#include <memory>

#include <absl/status/statusor.h>
#include <torch/torch.h>

#include "parallel/backend.h"
#include "parallel/communicator.h"
#include "parallel/mesh_layout.h"

namespace moa::parallel {

class Mesh {
 public:
  /// Every rank of `launcher_world` calls it together. With Backend::kNccl the world is an NCCL
  /// group over `launcher_world` on `device`; with kMpi it is `launcher_world` itself, which must
  /// outlive the mesh. The layout must match the world's size and this rank.
  static absl::StatusOr<std::unique_ptr<Mesh>> Create(const MeshLayout& layout,
                                                      Communicator& launcher_world, Backend backend,
                                                      const torch::Device& device);
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  const MeshLayout& layout() const { return layout_; }
  Communicator& world() const { return *world_; }
  Communicator& gradients() const { return *gradients_; }
  /// Both need ep > 1 (with ep = 1 no expert is sharded and nothing asks for them).
  Communicator& ep_group() const;
  Communicator& expert_replicas() const;

 private:
  Mesh() = default;

  MeshLayout layout_;
  std::unique_ptr<Communicator> owned_world_;  // the NCCL world, when the backend is NCCL
  Communicator* world_ = nullptr;
  std::unique_ptr<Communicator> gradients_;
  std::unique_ptr<Communicator> ep_group_;
  std::unique_ptr<Communicator> expert_replicas_;
};

}  // namespace moa::parallel
