// CRC-32C (Castagnoli), the checksum of TFRecord framing, and its masked form, which TFRecord
// stores so that a CRC of data that holds CRCs does not degenerate.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moa::report {

/// CRC-32C of `size` bytes at `data` (reflected polynomial 0x82F63B78, initial and final XOR
/// 0xFFFFFFFF).
uint32_t Crc32c(const void* data, size_t size);

/// TFRecord's mask: rotate right by 15 bits and add 0xa282ead8.
uint32_t MaskCrc(uint32_t crc);

}  // namespace moa::report
