// Entry point of the `moa` executable: training commands first settle how OpenMP's idle threads
// wait (common/threads.h), then MPI starts when a launcher started this process, then the
// subcommands in commands.cc run. An exception that escapes ends the whole job.
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/threads.h"
#include "launch/commands.h"
#include "parallel/mpi_communicator.h"

int main(int argc, char** argv) {
  const bool trains =
      argc > 1 && (std::strcmp(argv[1], "train") == 0 || std::strcmp(argv[1], "pretrain") == 0);
  if (trains) moa::RestartWithShortOpenMpSpin(argv);
  moa::parallel::MpiRuntime mpi(&argc, &argv);
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return moa::launch::RunCommand(args);
  } catch (const std::exception& e) {
    moa::parallel::AbortJob(moa::ExceptionMessage(e));
  }
}
