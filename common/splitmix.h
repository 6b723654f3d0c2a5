// SplitMix64, the integer mixer behind moa's keyed randomness (data streams, router noise,
// dropout masks): the same key always gives the same bits, on any rank.
#pragma once

#include <cstdint>

namespace moa {

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace moa
