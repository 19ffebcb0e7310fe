#include "core/util/error.h"

#include <algorithm>

namespace fp8rl {

std::string one_line(std::string_view msg, size_t max_bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(msg.size(), max_bytes) + 16);
  size_t i = 0;
  for (; i < msg.size(); ++i) {
    const auto c = static_cast<unsigned char>(msg[i]);
    std::string piece;
    switch (c) {
      case '\n': piece = "\\n"; break;
      case '\r': piece = "\\r"; break;
      case '\t': piece = "\\t"; break;
      case '\0': piece = "\\0"; break;
      default:
        if (c < 0x20 || c == 0x7f) piece = std::string("\\x") + kHex[c >> 4] + kHex[c & 15];
        else piece.assign(1, static_cast<char>(c));
    }
    // Stop before a piece that would not fit, and never split a UTF-8 sequence.
    if (out.size() + piece.size() > max_bytes) break;
    out += piece;
  }
  if (i < msg.size()) {
    while (i > 0 && i < msg.size() && (static_cast<unsigned char>(msg[i]) & 0xC0) == 0x80) {
      --i;
      out.pop_back();
    }
    out += "... (" + std::to_string(msg.size() - i) + " more bytes)";
  }
  return out;
}

ConfigError::ConfigError(const std::string& what) : std::runtime_error(one_line(what)) {}
RuntimeFailure::RuntimeFailure(const std::string& what) : std::runtime_error(one_line(what)) {}

void check_failed(const char* file, int line, const char* expr, const std::string& msg) {
  throw std::logic_error(std::string(file) + ":" + std::to_string(line) + ": check `" + expr +
                         "` failed: " + msg + " (this is a bug in fp8rl)");
}

}  // namespace fp8rl
