#include "data/keyed_rng.h"

#include <cstdint>

#include "common/splitmix.h"

namespace moa::data {

KeyedRng::KeyedRng(std::initializer_list<uint64_t> key) : state_(0x6d6f61ULL) {
  for (uint64_t k : key) state_ = SplitMix64(state_ ^ SplitMix64(k));
}

uint64_t KeyedRng::Next() {
  // SplitMix64 as a generator: mix the advancing counter.
  state_ += 0x9e3779b97f4a7c15ULL;
  return SplitMix64(state_ - 0x9e3779b97f4a7c15ULL);
}

uint64_t KeyedRng::Below(uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t value;
  do {
    value = Next();
  } while (value >= limit);
  return value % n;
}

}  // namespace moa::data
