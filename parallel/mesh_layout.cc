#include "parallel/mesh_layout.h"

#include <cstdlib>

namespace moa::parallel {
namespace {

int64_t EnvInt(std::initializer_list<const char*> names, int64_t fallback) {
  for (const char* name : names) {
    if (const char* value = std::getenv(name)) return std::atoll(value);
  }
  return fallback;
}

}  // namespace

int64_t LaunchedRank() { return EnvInt({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}, 0); }

int64_t LaunchedWorldSize() {
  return EnvInt({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}, 1);
}

absl::StatusOr<MeshLayout> DetectMeshLayout(int64_t dp, int64_t ep) {
  MeshLayout mesh;
  mesh.world_size = LaunchedWorldSize();
  mesh.rank = LaunchedRank();
  mesh.local_rank = EnvInt({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}, 0);
  mesh.local_size =
      EnvInt({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}, 1);
  if (ep < 1) return absl::InvalidArgumentError("parallel.ep must be at least 1");
  if (dp == 0) dp = mesh.world_size / ep;
  if (dp < 1 || dp * ep != mesh.world_size) {
    return absl::InvalidArgumentError("parallel.dp x parallel.ep = " + std::to_string(dp) + " x " +
                                      std::to_string(ep) + " does not match the " +
                                      std::to_string(mesh.world_size) + " processes launched");
  }
  mesh.dp = dp;
  mesh.ep = ep;
  return mesh;
}

std::string DescribeMesh(const MeshLayout& mesh) {
  return "rank " + std::to_string(mesh.rank) + " of " + std::to_string(mesh.world_size) + " (dp " +
         std::to_string(mesh.dp) + " x ep " + std::to_string(mesh.ep) + ")";
}

}  // namespace moa::parallel
