#include "core/hf/unicode.h"

#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include <utf8proc.h>

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

bool nfc_trivially(std::string_view s) {
  for (char c : s)
    if (static_cast<uint8_t>(c) >= 0xCC) return false;  // 0xCC 0x80 is U+0300, the first combining mark
  return true;
}

std::string nfc_whole(std::string_view s) {
  utf8proc_uint8_t* dst = nullptr;
  // No UTF8PROC_NULLTERM: the length bounds the input, so U+0000 inside it is just a character.
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &dst,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) {
    if (n == UTF8PROC_ERROR_NOMEM) throw std::bad_alloc();
    throw std::invalid_argument(std::string("utf8::nfc: ") + utf8proc_errmsg(n));
  }
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(dst, &std::free);
  return std::string(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
}

namespace {

// A normalization boundary (UAX #15: canonical combining class 0 and NFC_Quick_Check=Yes): NFC
// never changes the character nor combines it with what precedes it, so NFC(a + b) =
// NFC(a) + NFC(b) when b starts with one. Everything below U+0300 is, and so are these ranges,
// where most non-Latin text lives (a conservative list: false only costs a utf8proc call).
bool nfc_boundary(char32_t c) {
  return c < 0x300 || (c >= 0x4E00 && c <= 0x9FFF) ||  // CJK Unified Ideographs
         (c >= 0x3400 && c <= 0x4DBF) ||                 // Extension A
         (c >= 0xAC00 && c <= 0xD7A3) ||                 // Hangul syllables (a trailing jamo is not)
         (c >= 0x3041 && c <= 0x3096) ||                 // Hiragana (not the voicing marks U+3099/A)
         (c >= 0x30A1 && c <= 0x30FA) ||                 // Katakana
         (c >= 0x20000 && c <= 0x2A6DF) ||               // Extension B (not the compatibility ones
         (c >= 0x2A700 && c <= 0x2EBEF);                 //   at U+2F800, which NFC maps)
}

}  // namespace

std::string nfc(std::string_view s) {
  if (nfc_trivially(s)) return std::string(s);
  // Only the stretches that hold something other than boundary characters go through utf8proc,
  // each from the boundary before it (which may compose with what follows).
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t chunk = 0, i = 0;
  bool dirty = false;
  auto flush = [&](size_t end) {
    if (dirty) out += nfc_whole(s.substr(chunk, end - chunk));
    else out.append(s, chunk, end - chunk);
  };
  while (i < s.size()) {
    const Scan sc = scan(p + i, s.size() - i);
    if (!sc.ok) throw std::invalid_argument("utf8::nfc: input is not valid UTF-8");
    char32_t c = sc.len == 1 ? p[i] : p[i] & (0x7F >> sc.len);
    for (size_t k = 1; k < sc.len; ++k) c = (c << 6) | (p[i + k] & 0x3F);
    if (nfc_boundary(c)) {
      flush(i);
      chunk = i;
      dirty = false;
    } else {
      dirty = true;
    }
    i += sc.len;
  }
  flush(s.size());
  return out;
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
