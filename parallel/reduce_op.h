// Reduction operators shared by every communicator backend.
#pragma once

namespace moa::parallel {

enum class ReduceOp { kSum, kAverage, kMax };

}  // namespace moa::parallel
