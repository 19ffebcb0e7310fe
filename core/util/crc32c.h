// CRC-32C (Castagnoli; reflected polynomial 0x82F63B78), the checksum of checkpoint manifests
// (trainer/checkpoint_store.h) and of TFRecord framing in TensorBoard event files
// (trainer/metrics_log.h).
//
// Software only (slicing-by-8, a few GB/s): checkpoints are read from disk to be checksummed,
// so the disk, not this loop, sets the pace. CRC-32C rather than zlib's CRC-32 because
// TFRecord requires it; one checksum for both keeps one implementation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fp8rl {

// CRC-32C of `n` bytes, continuing from `init` (the CRC of the bytes before; 0 to start), so
// crc32c(b, nb, crc32c(a, na)) == crc32c(a followed by b).
uint32_t crc32c(const void* data, size_t n, uint32_t init = 0);
inline uint32_t crc32c(std::string_view bytes, uint32_t init = 0) { return crc32c(bytes.data(), bytes.size(), init); }

// TFRecord's masked CRC: a CRC stored next to the data it covers is masked so that the CRC of
// bytes that themselves hold CRCs does not degenerate (TensorFlow's crc32c::Mask).
constexpr uint32_t crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

}  // namespace fp8rl
