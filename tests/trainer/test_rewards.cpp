// Built-in rewards (trainer/rewards.h): math answer extraction and numeric equivalence, and the
// reward function each reward.type builds.
#include <string>

#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "trainer/rewards.h"
#include "trainer/tasks.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

namespace {

recipe::RewardConfig reward_of(const std::string& type, const std::string& pattern = "") {
  recipe::RewardConfig r;
  r.type = type;
  r.pattern = pattern;
  return r;
}

}  // namespace

TEST_CASE("rewards: extract_math_answer: boxed, ####, else the last number", "[trainer][rewards]") {
  struct Case {
    std::string response;
    std::optional<std::string> answer;
  };
  const std::vector<Case> cases{
      {"so the answer is \\boxed{42}.", "42"},
      {"\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"},
      {"first \\boxed{1} then \\boxed{ \\{x\\} + {y} }", " \\{x\\} + {y} "},
      {"\\boxed{3} and a broken \\boxed{4", "3"},  // the last complete box wins
      {"\\fbox{7}", "7"},
      {"\\boxed {8}", "8"},
      {"\\boxed{\\boxed{9}}", "9"},
      {"Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"},
      {"#### 1,234\n", "1,234"},
      {"#### \n the answer is 5", "5"},  // an empty #### line falls through
      {"I think it is 3, no 4.", "4"},
      {"total: -17 apples", "-17"},
      {"5-3 = 2", "2"},
      {"x-3", "3"},  // a binary minus is not a sign
      {"it costs 1,000,000 dollars", "1,000,000"},
      {"about 3.14 or 2.5.", "2.5"},
      {"the ratio is 3/4", "3/4"},
      {"1,23", "23"},
      {"no numbers here", std::nullopt},
      {"", std::nullopt},
      {"\\boxed{", std::nullopt},
  };
  for (const Case& c : cases) {
    INFO("response: " << c.response);
    CHECK(extract_math_answer(c.response) == c.answer);
  }
}

TEST_CASE("rewards: math_answers_equal: numbers, fractions, LaTeX", "[trainer][rewards]") {
  struct Case {
    std::string a, b;
    bool equal;
  };
  const std::vector<Case> cases{
      {"42", "42", true},
      {"42", "42.0", true},
      {"0.50", "1/2", true},
      {"\\frac{1}{2}", "0.5", true},
      {"\\dfrac{3}{4}", "0.75", true},
      {"\\tfrac34", "3/4", true},
      {"\\frac{6}{8}", "\\frac{3}{4}", true},
      {"-\\frac{3}{4}", "-0.75", true},
      {"\\frac{-3}{4}", "-3/4", true},
      {"1,234", "1234", true},
      {"1,000,000", "1000000", true},
      {"1{,}000", "1000", true},
      {"-5", "-5.00", true},
      {"+5", "5", true},
      {".5", "1/2", true},
      {"$12$", "12", true},
      {"\\$18", "18", true},  // LaTeX's escaped dollar (GSM8K-style answers)
      {"2\\frac{1}{2}", "2.5", true},  // a mixed number: 2 + 1/2
      {"2\\frac{1}{2}", "21/2", false},
      {"-1\\frac{3}{4}", "-7/4", true},
      {"3\\frac{x}{2}", "3x/2", true},  // not integer parts: a product, as before
      {"\\$1,000.50", "1000.5", true},
      {"\\(12\\)", "12", true},
      {"12.", "12", true},
      {"5\\text{ cm}", "5", true},
      {"10\\%", "10", true},
      {"90^\\circ", "90", true},
      {"x = 3", "3", true},
      {"\\left(3\\right)", "3", true},
      {"(1/2)", "0.5", true},
      {"\\text{(B)}", "(B)", true},
      {"\\left( 1, 2 \\right)", "(1,2)", true},
      {"\\pi", "\\pi", true},
      {"\\frac{\\pi}{2}", "\\frac\\pi2", true},
      {"1/3", "0.333333", false},
      {"0.5", "0.51", false},
      {"-5", "5", false},
      {"1,23", "123", false},  // not a thousands separator: compared as strings
      {"12,34,567", "1234567", false},
      {"1/0", "1/0", true},     // not a number: the same string
      {"2/4", "1/0", false},
      {"123456789012345678901", "123456789012345678901", true},  // too long for int64: as strings
      {"garbage", "42", false},
      {"", "", false},
      {"$ $", "", false},
      {"\\boxed{", "\\boxed{", true},
  };
  for (const Case& c : cases) {
    INFO(c.a << " vs " << c.b);
    CHECK(math_answers_equal(c.a, c.b) == c.equal);
    CHECK(math_answers_equal(c.b, c.a) == c.equal);
  }
}

TEST_CASE("rewards: math: extracted answer against the reference (also a full solution)", "[trainer][rewards]") {
  const RewardFunction f = make_reward_function(reward_of("math"), "");
  auto score = [&](std::string_view response, std::string_view answer) { return f({"q", std::string(response), std::string(answer)}); };
  CHECK(score("so \\boxed{\\frac{1}{2}}", "0.5") == 1.0);
  CHECK(score("so \\boxed{\\frac{1}{2}}", "1/3") == 0.0);
  CHECK(score("... #### 1,234", "1234") == 1.0);
  CHECK(score("she pays -3 dollars", "-3") == 1.0);
  CHECK(score("The answer is 72.", "Natalia sold 48/2 = 24 clips in May.\n#### 72") == 1.0);
  CHECK(score("The answer is 71.", "... so \\boxed{72}") == 0.0);
  CHECK(score("I don't know", "72") == 0.0);
  CHECK(score("", "72") == 0.0);
  CHECK(score("72", "") == 0.0);
  CHECK(score(std::string(100000, '{'), "1") == 0.0);
  CHECK(score(std::string("\\boxed{") + std::string(5000, '{'), "1") == 0.0);
}

TEST_CASE("rewards: exact_match, regex and format", "[trainer][rewards]") {
  const RewardFunction exact = make_reward_function(reward_of("exact_match"), "");
  CHECK(exact({"", " Paris\n", "Paris"}) == 1.0);
  CHECK(exact({"", "paris", "Paris"}) == 0.0);
  CHECK(exact({"", "", ""}) == 1.0);

  const RewardFunction re = make_reward_function(reward_of("regex", "<answer>\\d+</answer>"), "");
  CHECK(re({"", "think... <answer>12</answer> done", ""}) == 1.0);
  CHECK(re({"", "<answer>x</answer>", ""}) == 0.0);

  const RewardFunction fmt = make_reward_function(reward_of("format", "<think>.*</think><answer>\\d+</answer>"), "");
  CHECK(fmt({"", "<think>hmm</think><answer>3</answer>", ""}) == 1.0);
  CHECK(fmt({"", "<think>hmm</think><answer>3</answer> extra", ""}) == 0.0);
  CHECK(fmt({"", "x<think>hmm</think><answer>3</answer>", ""}) == 0.0);
  CHECK(fmt({"", "<think>hmm</think><answer>3</answer>\n", ""}) == 0.0);  // \z: no trailing newline
  // An alternation is anchored as a whole, and the first alternative must not win on a prefix.
  const RewardFunction alt = make_reward_function(reward_of("format", "a|ab"), "");
  CHECK(alt({"", "ab", ""}) == 1.0);
  CHECK(alt({"", "abc", ""}) == 0.0);
  // A trailing \Q... (quote to the end) still works when wrapped.
  const RewardFunction quoted = make_reward_function(reward_of("format", "x\\Q.*"), "");
  CHECK(quoted({"", "x.*", ""}) == 1.0);
  CHECK(quoted({"", "xyz", ""}) == 0.0);

  REQUIRE_THROWS_CONTAINING(make_reward_function(reward_of("regex", "(unclosed"), ""), ConfigError,
                            "reward.pattern: not a valid regex");
  REQUIRE_THROWS_CONTAINING(make_reward_function(reward_of("format", "a\\"), ""), ConfigError,
                            "reward.pattern: not a valid regex");
}

TEST_CASE("rewards: synthetic scores the task's verifier from prompt and answer", "[trainer][rewards]") {
  const RewardFunction f = make_reward_function(reward_of("synthetic"), "countdown");
  CHECK(f({"3 5 7>22=", " 7+5*3 ", "3*5+7"}) == 1.0);
  CHECK(f({"3 5 7>22=", "3+5+7", "3*5+7"}) == 0.0);
  const RewardFunction add = make_reward_function(reward_of("synthetic"), "addition");
  for (const TaskExample& e : make_task_examples("addition", 20, 1)) {
    CHECK(add({e.prompt, e.answer, e.answer}) == 1.0);
    CHECK(add({e.prompt, e.answer + "0", e.answer}) == 0.0);
  }
  REQUIRE_THROWS_CONTAINING(make_reward_function(reward_of("synthetic"), ""), ConfigError,
                            "must be one of: addition, copy, countdown");
}

TEST_CASE("rewards: command and unknown types are ConfigErrors", "[trainer][rewards]") {
  REQUIRE_THROWS_CONTAINING(make_reward_function(reward_of("command"), ""), ConfigError, "RewardCommand");
  REQUIRE_THROWS_CONTAINING(make_reward_function(reward_of("judge"), ""), ConfigError, "unknown type 'judge'");
}
