#include "core/hf/tokenizer_regex.h"

#include <pcre2.h>

#include <fmt/format.h>

#include "core/hf/regex.h"
#include "core/util/error.h"

namespace fp8rl::hf {
namespace {

// Unicode White_Space (what Oniguruma's \s matches), as the inside of a character class.
constexpr std::string_view kWhiteSpace =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

pcre2_code* code(void* p) { return static_cast<pcre2_code*>(p); }

}  // namespace

std::string rewrite_whitespace_classes(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpace) : fmt::format("[{}]", kWhiteSpace);
      } else if (e == 'S' && !in_class) {
        out += fmt::format("[^{}]", kWhiteSpace);
      } else {
        out += c;  // other escapes (and \S inside a class, which no tokenizer pattern uses) as is
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

TokenizerRegex::TokenizerRegex(const std::string& pattern, const std::string& where) {
  if (pattern.size() > kMaxRegexPatternLength)
    throw ConfigError(fmt::format("{}: the pattern is {} bytes; at most {} are allowed", where, pattern.size(),
                                  kMaxRegexPatternLength));
  const std::string rewritten = rewrite_whitespace_classes(pattern);
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_compile_context* cctx = pcre2_compile_context_create(nullptr);
  FP8RL_CHECK(cctx != nullptr, "pcre2_compile_context_create failed");
  pcre2_set_parens_nest_limit(cctx, kMaxRegexNesting);
  pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                                PCRE2_UTF | PCRE2_UCP, &err, &err_off, cctx);
  pcre2_compile_context_free(cctx);
  if (!c) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    throw ConfigError(fmt::format("{}: cannot compile pattern '{}' (at offset {} of '{}'): {}", where, pattern, err_off,
                                  rewritten, reinterpret_cast<const char*>(msg)));
  }
  pcre2_match_context* m = pcre2_match_context_create(nullptr);
  FP8RL_CHECK(m != nullptr, "pcre2_match_context_create failed");
  pcre2_set_match_limit(m, kRegexMatchLimit);
  mctx_ = m;
  // JIT makes splitting several times faster; without it (unsupported CPU) the interpreter runs.
  pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
  code_ = c;
}

TokenizerRegex::~TokenizerRegex() {
  pcre2_match_context_free(static_cast<pcre2_match_context*>(mctx_));
  pcre2_code_free(code(code_));
}

void TokenizerRegex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code(code_), nullptr);
  FP8RL_CHECK(md != nullptr, "pcre2_match_data_create_from_pattern failed");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0;
  uint32_t options = PCRE2_NO_UTF_CHECK;
  while (pos <= s.size()) {
    int rc = pcre2_match(code(code_), subject, s.size(), pos, options, md, static_cast<pcre2_match_context*>(mctx_));
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // Very long runs (e.g. a megabyte of spaces) can outgrow the JIT's default 32 KB stack;
      // the interpreter keeps its backtracking state on the heap.
      options |= PCRE2_NO_JIT;
      continue;
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      throw RuntimeFailure(fmt::format("tokenizer: regex match failed: {}", reinterpret_cast<const char*>(msg)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e == b) {
      // An empty match (no tokenizer pattern has one): step over one character.
      pos = b + 1;
      while (pos < s.size() && (static_cast<uint8_t>(s[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    out.emplace_back(b, e);
    pos = e;
  }
  pcre2_match_data_free(md);
}

}  // namespace fp8rl::hf
