#include "core/hf/regex.h"

#include <pcre2.h>

#include <fmt/format.h>

#include "core/util/error.h"

namespace fp8rl::hf {
namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR msg[256];
  pcre2_get_error_message(code, msg, sizeof(msg));
  return reinterpret_cast<const char*>(msg);
}

}  // namespace

Regex::Regex(std::string_view pattern, const std::string& where) : where_(where) {
  if (pattern.size() > kMaxRegexPatternLength)
    throw ConfigError(fmt::format("{}: the pattern is {} bytes; at most {} are allowed", where, pattern.size(),
                                  kMaxRegexPatternLength));
  pcre2_compile_context* cctx = pcre2_compile_context_create(nullptr);
  FP8RL_CHECK(cctx != nullptr, "pcre2_compile_context_create failed");
  pcre2_set_parens_nest_limit(cctx, kMaxRegexNesting);
  pcre2_set_max_pattern_length(cctx, kMaxRegexPatternLength);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &err, &off, cctx);
  pcre2_compile_context_free(cctx);
  if (!c) throw ConfigError(fmt::format("{}: not a valid regex (at offset {}): {}", where, off, pcre2_message(err)));
  pcre2_match_context* m = pcre2_match_context_create(nullptr);
  if (!m) {
    pcre2_code_free(c);
    throw std::bad_alloc();
  }
  pcre2_set_match_limit(m, kRegexMatchLimit);
  pcre2_set_depth_limit(m, kRegexMatchLimit);
  pcre2_set_heap_limit(m, 64 * 1024);  // KiB: backtracking state of one search
  code_ = c;
  mctx_ = m;
}

Regex::~Regex() {
  pcre2_match_context_free(static_cast<pcre2_match_context*>(mctx_));
  pcre2_code_free(static_cast<pcre2_code*>(code_));
}

std::optional<std::pair<size_t, size_t>> Regex::find(std::string_view subject, size_t start) const {
  if (start > subject.size()) return std::nullopt;
  auto* c = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(c, nullptr);
  if (!md) throw std::bad_alloc();
  const int rc = pcre2_match(c, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start, 0, md,
                             static_cast<pcre2_match_context*>(mctx_));
  std::optional<std::pair<size_t, size_t>> out;
  if (rc >= 0) {
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    out.emplace(ov[0], ov[1]);
  }
  pcre2_match_data_free(md);
  if (rc >= 0 || rc == PCRE2_ERROR_NOMATCH) return out;
  throw RuntimeFailure(fmt::format("{}: regex match gave up on a {}-byte text: {}", where_, subject.size(),
                                   pcre2_message(rc)));
}

}  // namespace fp8rl::hf
