// The pre-tokenizer regexes of tokenizer.json, matched with PCRE2 the way HF `tokenizers`
// matches them with Oniguruma.
//
// Both are backtracking engines with leftmost-first alternation, so the split patterns of
// GPT-2, Qwen2 and Llama 3 give the same matches, with one difference we remove: Oniguruma's
// `\s` is Unicode White_Space, PCRE2's (with UCP) misses U+0085 (NEL). `\s` / `\S` are rewritten
// to the White_Space set before compiling. \p{L} / \p{N} follow each library's Unicode tables
// (Unicode 14 in PCRE2 10.42 and in the Oniguruma that tokenizers 0.2x bundles).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fp8rl::hf {

class TokenizerRegex {
 public:
  // Throws ConfigError "<where>: cannot compile pattern ...: <reason>", also for a pattern over
  // kMaxRegexPatternLength bytes or nesting groups deeper than kMaxRegexNesting (core/hf/regex.h).
  // Each search runs with kRegexMatchLimit: a pattern that backtracks without end throws
  // RuntimeFailure from find_all instead of hanging.
  TokenizerRegex(const std::string& pattern, const std::string& where);
  ~TokenizerRegex();
  TokenizerRegex(const TokenizerRegex&) = delete;
  TokenizerRegex& operator=(const TokenizerRegex&) = delete;

  // Appends [begin, end) of every non-overlapping match in `s`, left to right.
  // Precondition: `s` is valid UTF-8 (not re-checked, for speed).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  void* mctx_ = nullptr;  // pcre2_match_context_8*: the match limit (a tokenizer.json is a user's file)
};

// `\s` and `\S` replaced by Oniguruma's Unicode White_Space set (exposed for tests).
std::string rewrite_whitespace_classes(std::string_view pattern);

}  // namespace fp8rl::hf
