// MD5 digests through OpenSSL, for the two places moa needs them: a sweep job's id (the hex digest
// of its arguments) and DomainBed's seed_hash, the md5 of a tuple's Python repr read as a
// big-endian integer modulo 2^31. An OpenSSL failure throws std::runtime_error.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace moa {

std::array<uint8_t, 16> Md5(const std::string& text);

/// The 32 lowercase hex digits of Md5(text), as Python's hashlib.md5(text).hexdigest().
std::string Md5Hex(const std::string& text);

/// int(md5(text).hexdigest(), 16) % 2**31: DomainBed's misc.seed_hash of the repr `text`.
uint32_t Md5Mod2To31(const std::string& text);

}  // namespace moa
