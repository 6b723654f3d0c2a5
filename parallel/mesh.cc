#include "parallel/mesh.h"

#include <stdexcept>
#include <string>

#include "common/status_macros.h"

namespace moa::parallel {

absl::StatusOr<std::unique_ptr<Mesh>> Mesh::Create(const MeshLayout& layout,
                                                   Communicator& launcher_world, Backend backend,
                                                   const torch::Device& device) {
  if (layout.world_size != launcher_world.size() || layout.rank != launcher_world.rank()) {
    return absl::FailedPreconditionError(
        "the launcher reports rank " + std::to_string(layout.rank) + " of " +
        std::to_string(layout.world_size) + " processes but MPI has rank " +
        std::to_string(launcher_world.rank()) + " of " + std::to_string(launcher_world.size()) +
        "; start moa with mpirun or srun --mpi=pmix");
  }
  auto mesh = std::unique_ptr<Mesh>(new Mesh());
  mesh->layout_ = layout;
  mesh->world_ = &launcher_world;
  if (backend == Backend::kNccl) {
    MOA_ASSIGN_OR_RETURN(mesh->owned_world_, MakeNcclWorld(launcher_world, device));
    mesh->world_ = mesh->owned_world_.get();
  }
  Communicator& world = *mesh->world_;
  const int rank = static_cast<int>(layout.rank);
  MOA_ASSIGN_OR_RETURN(mesh->gradients_, world.Split(0, rank));
  if (layout.ep > 1) {
    const int dp_rank = static_cast<int>(layout.dp_rank());
    const int ep_rank = static_cast<int>(layout.ep_rank());
    MOA_ASSIGN_OR_RETURN(mesh->ep_group_, world.Split(dp_rank, ep_rank));
    MOA_ASSIGN_OR_RETURN(mesh->expert_replicas_, world.Split(ep_rank, dp_rank));
  }
  return mesh;
}

Communicator& Mesh::ep_group() const {
  if (!ep_group_) throw std::logic_error("Mesh::ep_group() needs parallel.ep > 1");
  return *ep_group_;
}

Communicator& Mesh::expert_replicas() const {
  if (!expert_replicas_) throw std::logic_error("Mesh::expert_replicas() needs parallel.ep > 1");
  return *expert_replicas_;
}

}  // namespace moa::parallel
