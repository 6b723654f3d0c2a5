// The MPI implementation of Communicator (CPU tensors; device tensors are staged through host
// memory), and the process-wide MPI runtime:
// MPI is initialised only when a launcher (mpirun, srun) started the process, so one process
// needs no mpirun. A fatal error ends the whole job through MPI_Abort, naming the rank.
#pragma once

#include <memory>
#include <string>

#include <absl/status/statusor.h>

#include "parallel/communicator.h"

namespace moa::parallel {

/// True when the environment shows an MPI launcher (Open MPI, PMI, PMIx, Slurm with srun --mpi).
bool LaunchedUnderMpi();

/// The environment variable that asks MPI for a lower thread level than MPI_THREAD_MULTIPLE
/// (`serialized`, `funneled` or `single`; `multiple` is the default), so that tests can run a job
/// as an MPI without full thread support would.
inline constexpr char kMpiThreadLevelVariable[] = "MOA_MPI_THREAD_LEVEL";

/// Owns MPI_Init_thread / MPI_Finalize. Create one in main() before any communicator.
class MpiRuntime {
 public:
  /// Initialises MPI when LaunchedUnderMpi(), else does nothing. Asks for MPI_THREAD_MULTIPLE
  /// (or kMpiThreadLevelVariable's level) and checks the level provided: below
  /// MPI_THREAD_SERIALIZED the job ends naming it; at MPI_THREAD_SERIALIZED rank 0 logs that the
  /// gradient synchronizers run their collectives on the backward thread
  /// (MpiAllowsConcurrentCalls() is false).
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;
  bool active() const { return active_; }

 private:
  bool active_ = false;
};

/// False when MPI is active with less than MPI_THREAD_MULTIPLE: then no two threads of a process
/// may be inside MPI at once, and MPI collectives must stay on one thread at a time.
bool MpiAllowsConcurrentCalls();

/// The world group: MPI_COMM_WORLD when MPI is active, else the single-process group.
std::unique_ptr<Communicator> MakeWorldCommunicator();

/// Ends every rank of the job with `message` (printed with this rank's number) and exit code 1;
/// without MPI it exits the process.
[[noreturn]] void AbortJob(const std::string& message);

/// Open MPI's version string, or "none" without MPI.
std::string MpiVersion();

}  // namespace moa::parallel
