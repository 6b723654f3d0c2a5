#include "common/hash.h"

#include <openssl/evp.h>

#include <cstdio>
#include <stdexcept>

namespace moa {

std::array<uint8_t, 16> Md5(const std::string& text) {
  std::array<uint8_t, 16> digest{};
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), out, &length, EVP_md5(), nullptr) != 1 ||
      length != digest.size()) {
    throw std::runtime_error("OpenSSL's md5 failed");
  }
  for (size_t i = 0; i < digest.size(); ++i) digest[i] = out[i];
  return digest;
}

std::string Md5Hex(const std::string& text) {
  std::string hex;
  char byte[3];
  for (uint8_t b : Md5(text)) {
    std::snprintf(byte, sizeof(byte), "%02x", b);
    hex += byte;
  }
  return hex;
}

uint32_t Md5Mod2To31(const std::string& text) {
  const std::array<uint8_t, 16> d = Md5(text);
  // The 128-bit big-endian integer modulo 2^31 is its lowest 31 bits.
  const uint32_t low =
      (uint32_t{d[12]} << 24) | (uint32_t{d[13]} << 16) | (uint32_t{d[14]} << 8) | uint32_t{d[15]};
  return low & 0x7fffffffu;
}

}  // namespace moa
