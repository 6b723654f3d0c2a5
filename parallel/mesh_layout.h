// The shape of the process mesh: world = dp x ep (parallel.dp, parallel.ep), this process's
// coordinates in it, and how many ranks share this node. Detected from the launcher's environment
// (Open MPI, Slurm, PMI) before any communicator exists; one process without a launcher is 1 x 1.
// The communicators of that mesh are parallel::Mesh (mesh.h).
#pragma once

#include <cstdint>
#include <string>

#include <absl/status/statusor.h>

namespace moa::parallel {

struct MeshLayout {
  int64_t world_size = 1;
  int64_t rank = 0;
  int64_t local_rank = 0;
  int64_t local_size = 1;  // ranks on this node
  int64_t dp = 1;
  int64_t ep = 1;
  /// Rank order is dp-major: rank = dp_rank * ep + ep_rank.
  int64_t dp_rank() const { return rank / ep; }
  int64_t ep_rank() const { return rank % ep; }
};

/// Reads the world layout the launcher exported (OMPI_COMM_WORLD_*, PMI_*, SLURM_*), checks
/// that dp x ep equals the world size (dp = 0 means world / ep), and returns the mesh.
absl::StatusOr<MeshLayout> DetectMeshLayout(int64_t dp, int64_t ep);

/// This process's world rank as the launcher exported it (0 outside a launcher): for messages
/// that one process of a job should print before the communicators exist.
int64_t LaunchedRank();

/// The number of processes the launcher started (1 outside a launcher).
int64_t LaunchedWorldSize();

/// "rank R of N" style description for logs and env.json.
std::string DescribeMesh(const MeshLayout& mesh);

}  // namespace moa::parallel
