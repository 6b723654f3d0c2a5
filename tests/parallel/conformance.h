// The collective expectations every Communicator must meet, written in closed form of rank and
// size so they hold at any world size (used by the single-process and the mpirun test binaries).
#pragma once

#include "parallel/communicator.h"

namespace moa::parallel::test {

/// Runs every expectation on `comm` with GoogleTest assertions; all ranks must call it.
void RunConformance(Communicator& comm);

}  // namespace moa::parallel::test
