// UTF-8 validation, repair and NFC normalization, and GPT-2's byte <-> unicode map for
// byte-level BPE.
//
// Well-formed UTF-8 is RFC 3629 / Unicode Table 3-7: no overlong forms, no surrogates, nothing
// above U+10FFFF. Repair follows Rust's String::from_utf8_lossy (what HF `tokenizers` decode
// uses): each maximal ill-formed subpart becomes one U+FFFD.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fp8rl::utf8 {

// How the bytes at the start of a buffer begin.
struct Scan {
  size_t len;       // bytes of the sequence (ok), or of its maximal ill-formed subpart (>= 1)
  bool ok;          // a complete well-formed sequence
  bool truncated;   // not ok only because the buffer ends: more bytes could complete it
};
// Precondition: n >= 1.
Scan scan(const uint8_t* p, size_t n);

// Offset of the first ill-formed byte, or s.size() if `s` is well-formed.
size_t first_invalid(std::string_view s);
inline bool is_valid(std::string_view s) { return first_invalid(s) == s.size(); }

// Bytes at the end of `s` that start a well-formed sequence the buffer cuts short (0..3).
size_t incomplete_tail(std::string_view s);

// `s` with every maximal ill-formed subpart replaced by U+FFFD.
std::string to_valid_lossy(std::string_view s);

// Appends the UTF-8 encoding of `cp` (a valid scalar value).
void append(std::string& out, char32_t cp);

// Unicode Normalization Form C (canonical decomposition, then canonical composition), through
// utf8proc; what HF `tokenizers`' NFC normalizer does. Text with no byte >= 0xCC (nothing at or
// above U+0300, hence nothing that composes or decomposes) is returned unchanged without a call,
// and only the stretches around characters that may change (not CJK ideographs, kana, Hangul
// syllables) go through utf8proc.
// Precondition: `s` is well-formed UTF-8 (throws std::invalid_argument otherwise).
std::string nfc(std::string_view s);
// False only if nfc(s) might differ from s (the byte test above): a cheap pre-check.
bool nfc_trivially(std::string_view s);
// nfc(s) in one utf8proc call, without nfc's split at normalization boundaries (for tests).
std::string nfc_whole(std::string_view s);

}  // namespace fp8rl::utf8

namespace fp8rl::byte_level {

// GPT-2's reversible map from the 256 byte values to printable code points: the printable
// Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves, the other 68 to U+0100.. in
// order (so ' ' -> 'Ġ', '\n' -> 'Ċ'). Byte-level BPE vocabularies are written in these characters.
char32_t byte_to_char(uint8_t b);
// The UTF-8 text of byte_to_char(b).
const std::string& byte_to_utf8(uint8_t b);
// The inverse: -1 for a code point that no byte maps to.
int char_to_byte(char32_t c);

// A vocabulary token (as written in tokenizer.json) to the bytes it stands for. Returns false
// (and leaves `out` unspecified) if a character is not in the map.
bool token_to_bytes(std::string_view token, std::string& out);

}  // namespace fp8rl::byte_level
