// Regular expressions that users write (reward patterns), on PCRE2 with bounds.
//
// Rewards match against long responses (20K tokens), where a recursive matcher (std::regex)
// overflows the stack and a backtracking one without a budget can run for hours. Here:
//   - a pattern is at most kMaxRegexPatternLength bytes and nests at most kMaxRegexNesting
//     parentheses, checked when it compiles (ConfigError naming `where`);
//   - every match runs with a match limit and a heap limit: a pattern/subject pair that would
//     backtrack without end fails with RuntimeFailure instead of hanging.
// PCRE2 compiles and matches on the heap (no C-stack recursion), so deep patterns cannot crash.
// It lives in core/hf because that library already owns the PCRE2 dependency (the tokenizer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace fp8rl::hf {

inline constexpr size_t kMaxRegexPatternLength = 4096;
inline constexpr uint32_t kMaxRegexNesting = 64;
inline constexpr uint32_t kRegexMatchLimit = 10'000'000;  // PCRE2 match() calls per search

class Regex {
 public:
  // Perl-compatible syntax, UTF-8 (invalid UTF-8 in a subject never matches a character).
  // Throws ConfigError "<where>: ..." when the pattern is too long, too deeply nested or
  // does not compile; the message does not echo the pattern.
  Regex(std::string_view pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The first match at or after `start`: [begin, end). Throws RuntimeFailure when the match
  // limit runs out.
  std::optional<std::pair<size_t, size_t>> find(std::string_view subject, size_t start = 0) const;
  bool search(std::string_view subject) const { return find(subject).has_value(); }

 private:
  void* code_ = nullptr;   // pcre2_code_8*
  void* mctx_ = nullptr;   // pcre2_match_context_8*
  std::string where_;
};

}  // namespace fp8rl::hf
