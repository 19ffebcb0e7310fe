#include "core/unicode.h"

#include <vector>

namespace fp8rl::utf8 {

Scan scan(const uint8_t* p, size_t n) {
  const uint8_t b = p[0];
  if (b < 0x80) return {1, true, false};
  // Lead byte -> number of continuation bytes, and the allowed range of the first one
  // (Table 3-7: E0 A0.., ED ..9F, F0 90.., F4 ..8F exclude overlongs, surrogates, > U+10FFFF).
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) need = 1;
  else if (b == 0xE0) need = 2, lo = 0xA0;
  else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) need = 2;
  else if (b == 0xED) need = 2, hi = 0x9F;
  else if (b == 0xF0) need = 3, lo = 0x90;
  else if (b >= 0xF1 && b <= 0xF3) need = 3;
  else if (b == 0xF4) need = 3, hi = 0x8F;
  else return {1, false, false};  // 80..C1, F5..FF never start a sequence
  for (size_t i = 1; i <= need; ++i) {
    if (i >= n) return {i, false, true};
    const uint8_t c = p[i];
    if (c < (i == 1 ? lo : 0x80) || c > (i == 1 ? hi : 0xBF)) return {i, false, false};
  }
  return {need + 1, true, false};
}

size_t first_invalid(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const Scan sc = scan(p + i, s.size() - i);
    if (!sc.ok) return i;
    i += sc.len;
  }
  return s.size();
}

size_t incomplete_tail(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  // A truncated sequence is at most 3 bytes, so its lead byte is among the last 3.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const size_t i = s.size() - back;
    if ((p[i] & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const Scan sc = scan(p + i, back);
    return sc.truncated ? back : 0;
  }
  return 0;
}

std::string to_valid_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    const Scan sc = scan(p + i, s.size() - i);
    if (sc.ok) out.append(s.data() + i, sc.len);
    else out += "\xEF\xBF\xBD";  // U+FFFD
    i += sc.len;
  }
  return out;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace fp8rl::utf8

namespace fp8rl::byte_level {
namespace {

struct Tables {
  std::array<char32_t, 256> to_char{};
  std::array<std::string, 256> to_utf8;
  std::vector<int> to_byte;  // indexed by code point, up to U+0143

  Tables() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    to_byte.assign(next, -1);
    for (int b = 0; b < 256; ++b) {
      to_byte[to_char[b]] = b;
      utf8::append(to_utf8[b], to_char[b]);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

char32_t byte_to_char(uint8_t b) { return tables().to_char[b]; }
const std::string& byte_to_utf8(uint8_t b) { return tables().to_utf8[b]; }

int char_to_byte(char32_t c) {
  const auto& t = tables().to_byte;
  return c < t.size() ? t[c] : -1;
}

bool token_to_bytes(std::string_view token, std::string& out) {
  out.clear();
  const auto* p = reinterpret_cast<const uint8_t*>(token.data());
  size_t i = 0;
  while (i < token.size()) {
    const utf8::Scan sc = utf8::scan(p + i, token.size() - i);
    if (!sc.ok || sc.len > 2) return false;  // every mapped char is below U+0800
    const char32_t c = sc.len == 1 ? p[i] : static_cast<char32_t>(((p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F));
    const int b = char_to_byte(c);
    if (b < 0) return false;
    out += static_cast<char>(b);
    i += sc.len;
  }
  return true;
}

}  // namespace fp8rl::byte_level
