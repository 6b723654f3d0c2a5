#include "data/splits.h"

#include <openssl/evp.h>

#include <random>
#include <stdexcept>

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
  const std::string repr = "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(repr.data(), repr.size(), digest, &length, EVP_md5(), nullptr) != 1 ||
      length != 16) {
    throw std::runtime_error("md5 failed in SeedHash");
  }
  // The 128-bit big-endian integer modulo 2^31 is its lowest 31 bits.
  const uint32_t low = (uint32_t{digest[12]} << 24) | (uint32_t{digest[13]} << 16) |
                       (uint32_t{digest[14]} << 8) | uint32_t{digest[15]};
  return low & 0x7fffffffu;
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
