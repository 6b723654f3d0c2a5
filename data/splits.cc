#include "data/splits.h"

#include <random>
#include <stdexcept>

#include "common/hash.h"

namespace moa::data {
namespace {

// NumPy's random_interval for max < 2^32 (legacy RandomState path).
uint32_t RandomInterval(std::mt19937& gen, uint32_t max) {
  if (max == 0) return 0;
  uint32_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  uint32_t value;
  while ((value = (static_cast<uint32_t>(gen()) & mask)) > max) {
  }
  return value;
}

}  // namespace

uint32_t SeedHash(int64_t a, int64_t b) {
  return Md5Mod2To31("(" + std::to_string(a) + ", " + std::to_string(b) + ")");
}

std::vector<int64_t> LegacyNumpyShuffle(int64_t n, uint32_t seed) {
  std::vector<int64_t> keys(n);
  for (int64_t i = 0; i < n; ++i) keys[i] = i;
  std::mt19937 gen(seed);  // init_genrand, as RandomState(int) does.
  for (int64_t i = n - 1; i >= 1; --i) {
    const int64_t j = RandomInterval(gen, static_cast<uint32_t>(i));
    std::swap(keys[i], keys[j]);
  }
  return keys;
}

InOutSplit SplitInOut(int64_t n, double holdout_fraction, uint32_t seed) {
  const std::vector<int64_t> keys = LegacyNumpyShuffle(n, seed);
  const int64_t n_out = static_cast<int64_t>(static_cast<double>(n) * holdout_fraction);
  InOutSplit split;
  split.out.assign(keys.begin(), keys.begin() + n_out);
  split.in.assign(keys.begin() + n_out, keys.end());
  return split;
}

}  // namespace moa::data
