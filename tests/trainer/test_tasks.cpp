// Synthetic tasks (trainer/tasks.h): the examples are deterministic and well formed, every stored
// answer passes its own verifier, and the countdown verifier accepts any valid expression while
// rejecting garbage without crashing.
#include <string>

#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "trainer/prompts.h"
#include "trainer/tasks.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

namespace {

bool all_of_chars(const std::string& s, char lo, char hi) {
  for (char c : s)
    if (c < lo || c > hi) return false;
  return !s.empty();
}

}  // namespace

TEST_CASE("tasks: names", "[trainer][tasks]") {
  CHECK(task_names() == std::vector<std::string>{"addition", "copy", "countdown"});
  CHECK(is_task("countdown"));
  CHECK_FALSE(is_task("Addition"));
  CHECK_FALSE(is_task(""));
}

TEST_CASE("tasks: examples are deterministic in (task, count, seed) and a smaller count is a prefix",
          "[trainer][tasks]") {
  for (const std::string& task : task_names()) {
    INFO(task);
    const auto a = make_task_examples(task, 50, 7);
    const auto b = make_task_examples(task, 50, 7);
    const auto c = make_task_examples(task, 50, 8);
    const auto prefix = make_task_examples(task, 10, 7);
    REQUIRE(a.size() == 50);
    bool differs = false;
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].prompt == b[i].prompt);
      CHECK(a[i].answer == b[i].answer);
      differs = differs || a[i].prompt != c[i].prompt;
      if (i < prefix.size()) CHECK(a[i].prompt == prefix[i].prompt);
    }
    CHECK(differs);
    CHECK(make_task_examples(task, 0, 7).empty());
  }
  // The same bytes on every platform: splitmix64, no std distributions. These pin the stream
  // (checked against a Python re-implementation of splitmix64 seeded with seed ^ fnv1a(task)).
  CHECK(make_task_examples("addition", 1, 1)[0].prompt == "77+68=");
  CHECK(make_task_examples("copy", 1, 1)[0].prompt == "copy beg=");
  CHECK(make_task_examples("countdown", 1, 1)[0].prompt == "3 9 7>19=");
  CHECK(make_task_examples("countdown", 1, 1)[0].answer == "3+9+7");
}

TEST_CASE("tasks: addition examples are a+b= with a, b in [0, 99] and score their own answer", "[trainer][tasks]") {
  for (const TaskExample& e : make_task_examples("addition", 500, 3)) {
    INFO(e.prompt);
    const size_t plus = e.prompt.find('+');
    REQUIRE(plus != std::string::npos);
    REQUIRE(e.prompt.back() == '=');
    const std::string a = e.prompt.substr(0, plus), b = e.prompt.substr(plus + 1, e.prompt.size() - plus - 2);
    REQUIRE(all_of_chars(a, '0', '9'));
    REQUIRE(all_of_chars(b, '0', '9'));
    CHECK(std::stoi(a) <= 99);
    CHECK(std::stoi(b) <= 99);
    CHECK(e.answer == std::to_string(std::stoi(a) + std::stoi(b)));
    CHECK(score_task_response("addition", e, e.answer) == 1.0);
  }
  const TaskExample e{"37+85=", "122"};
  CHECK(score_task_response("addition", e, "122") == 1.0);
  CHECK(score_task_response("addition", e, "  122\n") == 1.0);
  CHECK(score_task_response("addition", e, "123") == 0.0);
  CHECK(score_task_response("addition", e, "1 22") == 0.0);
  CHECK(score_task_response("addition", e, "122122") == 0.0);
  CHECK(score_task_response("addition", e, "") == 0.0);
}

TEST_CASE("tasks: copy examples are lowercase strings of length 3..6", "[trainer][tasks]") {
  int by_length[7] = {};
  for (const TaskExample& e : make_task_examples("copy", 400, 5)) {
    INFO(e.prompt);
    REQUIRE(e.prompt == "copy " + e.answer + "=");
    REQUIRE(e.answer.size() >= 3);
    REQUIRE(e.answer.size() <= 6);
    CHECK(all_of_chars(e.answer, 'a', 'z'));
    ++by_length[e.answer.size()];
    CHECK(score_task_response("copy", e, e.answer) == 1.0);
  }
  for (int n = 3; n <= 6; ++n) CHECK(by_length[n] > 50);
  const TaskExample e{"copy abc=", "abc"};
  CHECK(score_task_response("copy", e, "\tabc ") == 1.0);
  CHECK(score_task_response("copy", e, "ab") == 0.0);
  CHECK(score_task_response("copy", e, "ABC") == 0.0);
  CHECK(score_task_response("copy", e, "abc=") == 0.0);
}

TEST_CASE("tasks: countdown examples list 3 numbers in [1, 9], a positive target and a valid answer",
          "[trainer][tasks]") {
  for (const TaskExample& e : make_task_examples("countdown", 500, 11)) {
    INFO(e.prompt << " -> " << e.answer);
    REQUIRE(e.prompt.size() >= 8);
    for (char digit : {e.prompt[0], e.prompt[2], e.prompt[4]}) CHECK(all_of_chars(std::string(1, digit), '1', '9'));
    CHECK(e.prompt[1] == ' ');
    CHECK(e.prompt[3] == ' ');
    CHECK(e.prompt[5] == '>');
    CHECK(all_of_chars(e.prompt.substr(6, e.prompt.size() - 7), '0', '9'));
    CHECK(e.answer.size() == 5);
    CHECK(score_task_response("countdown", e, e.answer) == 1.0);
  }
}

TEST_CASE("tasks: the countdown verifier parses + - * and parentheses with precedence", "[trainer][tasks]") {
  const TaskExample e{"3 5 7>22=", "3*5+7"};
  struct Case {
    std::string response;
    double score;
  };
  const std::vector<Case> cases{
      {"3*5+7", 1}, {"7+3*5", 1}, {"5*3+7", 1}, {"(3*5)+7", 1}, {" 3 * 5 + 7 \n", 1}, {"((((3*5))))+7", 1},
      {"7+(5*3)", 1},
      {"3*(5+7)", 0},     // 36: precedence is respected
      {"3+5*7", 0},       // 38
      {"3*5+7+0", 0},     // 0 is not listed
      {"3*5+7*1", 0},     // neither is 1
      {"3*3+7+6", 0},     // 3 twice
      {"22", 0},          // the target itself is not a listed number
      {"", 0}, {"3*5+", 0}, {"*3*5+7", 0}, {"(3*5+7", 0}, {"3*5+7)", 0}, {"3*5+7=22", 0}, {"3 5 7", 0},
      {"-3*5+7", 0}, {"3/5+7", 0}, {"03*5+7", 0}, {"3*5+07", 0}, {"three", 0}, {"3*5+7\x01", 0},
      {"((((((((((((((((((((3*5))))))))))))))))))))+7", 0},  // deeper than the verifier follows
      {"3" + std::string(70, ' ') + "*5+7", 0},  // valid, but longer than 64 bytes
      {std::string(65, '('), 0},
  };
  for (const Case& c : cases) {
    INFO("response: '" << c.response << "'");
    CHECK(score_task_response("countdown", e, c.response) == c.score);
  }
  // The numbers are a multiset: a repeated number may be used as often as it is listed.
  CHECK(score_task_response("countdown", {"2 2 5>9=", "2+2+5"}, "2+5+2") == 1.0);
  CHECK(score_task_response("countdown", {"2 3 5>9=", "2*3+..."}, "2+2+5") == 0.0);
  // Not all numbers need to be used; the value must equal the target.
  CHECK(score_task_response("countdown", {"4 6 8>10=", "x"}, "4+6") == 1.0);
  // Large numbers do not overflow into a false match.
  CHECK(score_task_response("countdown", {"999999 999999 999999>1=", "x"}, "999999*999999*999999") == 0.0);
}

// The reward sees the rendered prompt: under a chat template the task's "A B C>T=" sits inside
// the template's markup, and the verifier finds it there.
TEST_CASE("tasks: the countdown verifier reads its prompt inside a chat template's markup", "[trainer][tasks]") {
  const TaskExample chat{"<|im_start|>user\n3 9 7>19=<|im_end|>\n<|im_start|>assistant\n", "3+9+7"};
  CHECK(score_task_response("countdown", chat, "3+9+7") == 1.0);
  CHECK(score_task_response("countdown", chat, "9+7+3") == 1.0);
  CHECK(score_task_response("countdown", chat, "7+9") == 0.0);
  CHECK(score_task_response("countdown", chat, "19") == 0.0);  // 19 is not one of the numbers
  const TaskExample plain{"3 9 7>19=", "3+9+7"};
  CHECK(score_task_response("countdown", plain, "3+9+7") == 1.0);
  const TaskExample trailing{"3 9 7>19=x", "3+9+7"};  // text after the form, as a template's end tag
  CHECK(score_task_response("countdown", trailing, "3+9+7") == 1.0);
}

TEST_CASE("tasks: errors: unknown task, negative count, a malformed countdown prompt", "[trainer][tasks]") {
  REQUIRE_THROWS_CONTAINING(make_task_examples("additon", 3, 0), ConfigError, "did you mean 'addition'");
  REQUIRE_THROWS_CONTAINING(make_task_examples("sorting", 3, 0), ConfigError,
                            "expected one of: addition, copy, countdown");
  REQUIRE_THROWS_CONTAINING(make_task_examples("copy", -1, 0), ConfigError, "count must be >= 0");
  REQUIRE_THROWS_CONTAINING(score_task_response("nope", {"a", "b"}, "b"), ConfigError, "unknown synthetic task");
  for (const char* bad : {"", "3 5 7=", "3 5 7>22", "a b>3=", "3  5>8=", "1234567>1=", ">5="}) {
    INFO(bad);
    REQUIRE_THROWS_CONTAINING(score_task_response("countdown", {bad, "x"}, "3"), ConfigError,
                              "is not of the form 'A B C>TARGET='");
  }
}

TEST_CASE("tasks: write_task_jsonl writes what the prompt reader reads", "[trainer][tasks]") {
  test::TempDir dir;
  const std::string path = (dir.path() / "countdown.jsonl").string();
  write_task_jsonl("countdown", 20, 9, path);
  const auto examples = make_task_examples("countdown", 20, 9);
  const std::vector<Prompt> prompts = read_prompts_jsonl(path);
  REQUIRE(prompts.size() == 20);
  for (size_t i = 0; i < prompts.size(); ++i) CHECK(prompts[i].text == examples[i].prompt);
  const std::string text = test::read_file(path);
  CHECK(text.rfind("{\"prompt\":\"" + examples[0].prompt + "\",\"answer\":\"" + examples[0].answer +
                       "\",\"task\":\"countdown\"}\n",
                   0) == 0);
  REQUIRE_THROWS_CONTAINING(write_task_jsonl("nope", 1, 0, path), ConfigError, "unknown synthetic task");
  CHECK(read_prompts_jsonl(path).size() == 20);  // the failed call left the file alone
}
