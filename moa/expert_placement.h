// Expert parallelism's placement: which rank of the expert-parallel group holds each expert of an
// MoA layer, balanced by cost rather than count (a rank-8 LoRA expert costs eight rank-1 ones).
#pragma once

#include <cstdint>
#include <vector>

#include <absl/status/statusor.h>

namespace moa {

/// Assigns experts with `costs` to `ranks` ranks so that the largest per-rank total is as small
/// as possible, every rank holding at least one expert: an exhaustive branch-and-bound search
/// for up to 16 experts (exact), longest-processing-time-first beyond (within 4/3 of optimal).
/// Ties keep lower ranks for the costlier experts. Error when ranks exceed the experts.
absl::StatusOr<std::vector<int>> PartitionExperts(const std::vector<int64_t>& costs, int ranks);

}  // namespace moa
