// A small MPI program for the failure tests: every rank all-reduces in a loop; at iteration 3
// the rank named on the command line fails -- `throw` raises an exception that main turns into
// AbortJob, as `moa` does, `kill` sends itself SIGKILL -- while the others wait in the collective.
//
// usage: mpirun -np N failure_helper throw|kill RANK
#include <csignal>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "parallel/mpi_communicator.h"

int main(int argc, char** argv) {
  moa::parallel::MpiRuntime mpi(&argc, &argv);
  if (argc < 3) return 2;
  const std::string mode = argv[1];
  const int victim = std::atoi(argv[2]);
  try {
    auto world = moa::parallel::MakeWorldCommunicator();
    for (int i = 0; i < 1000; ++i) {
      if (i == 3 && world->rank() == victim) {
        if (mode == "kill") std::raise(SIGKILL);
        throw std::runtime_error("injected failure in the middle of an all-reduce loop");
      }
      torch::Tensor t = torch::ones({1024});
      const absl::Status status = world->AllReduce(t, moa::parallel::ReduceOp::kSum);
      if (!status.ok()) throw std::runtime_error(std::string(status.message()));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (const std::exception& e) {
    moa::parallel::AbortJob(e.what());
  }
  return 0;
}
