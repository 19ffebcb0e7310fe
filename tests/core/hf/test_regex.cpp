// Users' regexes (reward patterns) on PCRE2: bounded compile, bounded match (core/hf/regex.h).
#include <string>

#include "core/hf/regex.h"
#include "core/hf/tokenizer_regex.h"
#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::hf;

TEST_CASE("Regex finds matches and refuses bad patterns by where, without echoing them", "[regex]") {
  Regex re("\\\\boxed\\{(\\d+)\\}", "reward.pattern");
  auto m = re.find("so the answer is \\boxed{42}.");
  REQUIRE(m.has_value());
  CHECK(m->first == 17);
  CHECK(m->second == 27);
  CHECK_FALSE(re.search("no box here"));
  CHECK(Regex("é+", "p").search("caféé"));
  CHECK_FALSE(Regex("x", "p").search(std::string("\xff\xfe", 2)));  // invalid UTF-8: no match, no error
  REQUIRE_THROWS_CONTAINING(Regex("(ab", "reward.pattern"), ConfigError, "reward.pattern: not a valid regex (at offset 3)");
  REQUIRE_THROWS_CONTAINING(Regex(std::string(kMaxRegexPatternLength + 1, 'a'), "p"), ConfigError, "at most 4096");
  REQUIRE_THROWS_CONTAINING(Regex(std::string(kMaxRegexNesting + 1, '(') + std::string(kMaxRegexNesting + 1, ')'), "p"),
                            ConfigError, "too deeply nested");
  Regex(std::string(kMaxRegexNesting - 1, '(') + std::string(kMaxRegexNesting - 1, ')'), "p");
}

TEST_CASE("Regex gives up on catastrophic backtracking instead of hanging or crashing", "[regex]") {
  Regex re("^(a+)+$", "reward.pattern");
  CHECK(re.search(std::string(30, 'a')));
  REQUIRE_THROWS_CONTAINING(re.search(std::string(40, 'a') + "b"), RuntimeFailure, "reward.pattern: regex match gave up");
  // A long response (20K tokens ~ 100 KB) with a linear pattern is fine.
  std::string response(100000, 'x');
  response += "ANSWER: 7";
  CHECK(Regex("ANSWER: (\\d+)", "p").search(response));
}

TEST_CASE("a tokenizer.json pre-tokenizer pattern is bounded like a reward pattern", "[regex]") {
  REQUIRE_THROWS_CONTAINING(TokenizerRegex(std::string(kMaxRegexPatternLength + 1, 'a'), "tokenizer.json"), ConfigError,
                            "at most 4096");
  REQUIRE_THROWS_CONTAINING(TokenizerRegex(std::string(100, '(') + std::string(100, ')'), "tokenizer.json"), ConfigError,
                            "tokenizer.json: cannot compile pattern");
  TokenizerRegex re("^(a+)+$", "tokenizer.json");
  std::vector<std::pair<size_t, size_t>> out;
  REQUIRE_THROWS_AS(re.find_all(std::string(40, 'a') + "b", out), RuntimeFailure);
}
