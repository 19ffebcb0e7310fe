#include "core/util/crc32c.h"

#include <array>
#include <bit>
#include <cstring>

namespace fp8rl {

namespace {

// kTable[0] is the classic byte-at-a-time table; kTable[k][b] is the CRC of byte b followed by
// k zero bytes, so eight table lookups fold eight input bytes at once (slicing-by-8).
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    t[0][i] = c;
  }
  for (size_t s = 1; s < 8; ++s)
    for (size_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xffu];
  return t;
}

constexpr Tables kTable = make_tables();

// The 8-byte step reads two words as little-endian; every machine fp8rl runs on (x86-64, aarch64) is.
static_assert(std::endian::native == std::endian::little, "crc32c's slicing-by-8 assumes little-endian");

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t init) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~init;
  for (; n >= 8; p += 8, n -= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = kTable[7][lo & 0xff] ^ kTable[6][(lo >> 8) & 0xff] ^ kTable[5][(lo >> 16) & 0xff] ^ kTable[4][lo >> 24] ^
        kTable[3][hi & 0xff] ^ kTable[2][(hi >> 8) & 0xff] ^ kTable[1][(hi >> 16) & 0xff] ^ kTable[0][hi >> 24];
  }
  for (; n > 0; ++p, --n) c = (c >> 8) ^ kTable[0][(c ^ *p) & 0xff];
  return ~c;
}

}  // namespace fp8rl
