// DomainBed's seeded in/out splits, bit for bit: seed_hash (md5 of the tuple's repr, mod 2^31)
// and NumPy's legacy RandomState(seed).shuffle (MT19937 with init_genrand, Fisher-Yates with
// masked rejection sampling).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moa::data {

/// DomainBed's misc.seed_hash(a, b): int(md5(str((a, b))).hexdigest(), 16) % 2**31.
uint32_t SeedHash(int64_t a, int64_t b);

/// The first list is `out` (the first floor(n * holdout_fraction) shuffled indices), the second
/// `in`, exactly as DomainBed's split_dataset(env, int(len(env) * holdout), seed_hash(...)).
struct InOutSplit {
  std::vector<int64_t> in;
  std::vector<int64_t> out;
};
InOutSplit SplitInOut(int64_t n, double holdout_fraction, uint32_t seed);

/// NumPy's np.random.RandomState(seed).shuffle(list(range(n))).
std::vector<int64_t> LegacyNumpyShuffle(int64_t n, uint32_t seed);

}  // namespace moa::data
