// Entry point of the `moa` executable: starts MPI when a launcher started this process, then
// dispatches to the subcommands in commands.cc. An exception that escapes ends the whole job.
#include <exception>
#include <string>
#include <vector>

#include "launch/commands.h"
#include "parallel/mpi_communicator.h"

int main(int argc, char** argv) {
  moa::parallel::MpiRuntime mpi(&argc, &argv);
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return moa::launch::RunCommand(args);
  } catch (const std::exception& e) {
    moa::parallel::AbortJob(e.what());
  }
}
