// KeyedRng: a counter-based generator for randomness that must not depend on the number of ranks
// (docs/architecture.md, Keyed randomness): the same key always gives the same sequence, on any
// rank.
//
//   moa::data::KeyedRng rng({seed, domain, step});
//   uint64_t index = rng.Below(n);
#pragma once

#include <cstdint>
#include <initializer_list>

namespace moa::data {

class KeyedRng {
 public:
  explicit KeyedRng(std::initializer_list<uint64_t> key);
  uint64_t Next();
  /// Uniform integer in [0, n), unbiased (rejection sampling).
  uint64_t Below(uint64_t n);
  /// Uniform double in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  /// Uniform double in [low, high).
  double Uniform(double low, double high) { return low + (high - low) * Uniform(); }

 private:
  uint64_t state_;
};

}  // namespace moa::data
