// The process mesh layout read from the launcher's environment.
#include <cstdlib>

#include "parallel/mesh_layout.h"
#include "tests/support/test_support.h"

namespace moa::parallel {
namespace {

TEST(MeshLayoutTest, SingleProcessIsOneByOne) {
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("PMI_SIZE");
  unsetenv("SLURM_NTASKS");
  for (const char* rank : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}) unsetenv(rank);
  EXPECT_EQ(LaunchedRank(), 0);
  MOA_ASSERT_OK_AND_ASSIGN(MeshLayout mesh, DetectMeshLayout(0, 1));
  EXPECT_EQ(mesh.world_size, 1);
  EXPECT_EQ(mesh.dp, 1);
  EXPECT_FALSE(DetectMeshLayout(2, 1).ok());
}

TEST(MeshLayoutTest, OpenMpiEnvironmentGivesCoordinates) {
  setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  setenv("OMPI_COMM_WORLD_RANK", "3", 1);
  MOA_ASSERT_OK_AND_ASSIGN(MeshLayout mesh, DetectMeshLayout(0, 2));
  EXPECT_EQ(mesh.dp, 2);
  EXPECT_EQ(mesh.dp_rank(), 1);
  EXPECT_EQ(mesh.ep_rank(), 1);
  auto bad = DetectMeshLayout(3, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("parallel.dp"), std::string::npos);
  EXPECT_EQ(LaunchedRank(), 3);
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("OMPI_COMM_WORLD_RANK");
}

}  // namespace
}  // namespace moa::parallel
