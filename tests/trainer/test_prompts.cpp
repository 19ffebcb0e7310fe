// Prompt JSONL files (trainer/prompts.h): the three layouts are read, blank lines and CRLF are
// tolerated, and every malformed line is reported as `file:line:` with what was expected.
#include <string>

#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "trainer/prompts.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

TEST_CASE("prompts: text, a conversation under prompt, messages, blank lines and CRLF", "[trainer][prompts]") {
  const std::string text =
      "{\"prompt\": \"What is 2 + 3?\", \"answer\": \"5\"}\n"
      "\n"
      "  \t\n"
      "{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}]}\r\n"
      "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"x\"}],"
      " \"prompt\": \"ignored\"}";
  const std::vector<Prompt> ps = parse_prompts_jsonl(text, "p.jsonl");
  REQUIRE(ps.size() == 3);
  CHECK(ps[0].text == "What is 2 + 3?");
  CHECK_FALSE(ps[0].is_chat());
  CHECK(ps[0].line == 1);
  REQUIRE(ps[1].messages.size() == 1);
  CHECK(ps[1].messages[0].role == "user");
  CHECK(ps[1].messages[0].content == "hi");
  CHECK(ps[1].line == 4);
  REQUIRE(ps[2].messages.size() == 2);
  CHECK(ps[2].messages[0].role == "system");
  CHECK(ps[2].text.empty());
  CHECK(ps[2].line == 5);
}

TEST_CASE("prompts: a custom prompt key (data.prompt_key)", "[trainer][prompts]") {
  const auto ps = parse_prompts_jsonl("{\"question\": \"q1\"}\n", "p.jsonl", "question");
  REQUIRE(ps.size() == 1);
  CHECK(ps[0].text == "q1");
  REQUIRE_THROWS_CONTAINING(parse_prompts_jsonl("{\"prompt\": \"q1\"}\n", "p.jsonl", "question"), ConfigError,
                            "p.jsonl:1: no \"question\" or \"messages\" key");
}

TEST_CASE("prompts: malformed lines are reported as file:line with what is expected", "[trainer][prompts]") {
  const std::string ok = "{\"prompt\": \"fine\"}\n";
  struct Case {
    std::string line;
    std::string needle;
  };
  const std::vector<Case> cases{
      {"not json", "p.jsonl:2: not valid JSON"},
      {"{\"prompt\": \"unterminated}", "p.jsonl:2: not valid JSON"},
      {"{\"prompt\": \"a\"} trailing", "p.jsonl:2: not valid JSON"},
      {"{\"prompt\": \"a\", \"n\": 1e555}", "p.jsonl:2: not valid JSON (number overflow"},  // libFuzzer finding
      {"{\"prompt\": \"\xff\xfe\"}", "p.jsonl:2: not valid JSON"},
      {"[1, 2]", "p.jsonl:2: got an array; expected one JSON object per line"},
      {"\"just a string\"", "p.jsonl:2: got a string"},
      {"{\"text\": \"x\"}", "p.jsonl:2: no \"prompt\" or \"messages\" key"},
      {"{\"prompt\": 3}", "p.jsonl:2: \"prompt\": expected a string or a list of messages, got a number"},
      {"{\"prompt\": null}", "got null"},
      {"{\"prompt\": {\"role\": \"user\"}}", "got an object"},
      {"{\"prompt\": \"\"}", "p.jsonl:2: \"prompt\" is an empty string"},
      {"{\"messages\": \"hi\"}", "p.jsonl:2: \"messages\": expected a list of messages, got a string"},
      {"{\"messages\": []}", "p.jsonl:2: \"messages\" is an empty list"},
      {"{\"messages\": [1]}", "p.jsonl:2: \"messages\"[0]: expected an object"},
      {"{\"messages\": [{\"content\": \"x\"}]}", "\"messages\"[0]: expected a string \"role\""},
      {"{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "\"messages\"[0]: expected a string \"content\", got a number"},
      {"{\"messages\": [{\"role\": \"user\"}]}", "expected a string \"content\", got none"},
      {"{\"prompt\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "\"prompt\"[0]: unknown role 'tool'"},
  };
  for (const Case& c : cases) {
    INFO(c.line);
    REQUIRE_THROWS_CONTAINING(parse_prompts_jsonl(ok + c.line + "\n" + ok, "p.jsonl"), ConfigError, c.needle);
  }
}

TEST_CASE("prompts: files: empty, missing, a directory", "[trainer][prompts]") {
  test::TempDir dir;
  const std::string good = dir.write("good.jsonl", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}");
  CHECK(read_prompts_jsonl(good).size() == 2);
  REQUIRE_THROWS_CONTAINING(read_prompts_jsonl(dir.write("empty.jsonl", "")), ConfigError, "empty.jsonl: no prompts");
  REQUIRE_THROWS_CONTAINING(read_prompts_jsonl(dir.write("blank.jsonl", "\n\n")), ConfigError, "no prompts");
  REQUIRE_THROWS_CONTAINING(read_prompts_jsonl((dir.path() / "nope.jsonl").string()), ConfigError,
                            "No such file or directory");
  REQUIRE_THROWS_CONTAINING(read_prompts_jsonl(dir.path().string()), ConfigError, "is not a regular file");
}

TEST_CASE("prompts: a control character in a line stays on one error line", "[trainer][prompts]") {
  try {
    parse_prompts_jsonl(std::string("{\"prompt\": 1,\x1b\n"), "p.jsonl");
    FAIL("expected ConfigError");
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    CHECK(what.find('\n') == std::string::npos);
    CHECK(what.find('\x1b') == std::string::npos);
    CHECK(what.rfind("p.jsonl:1: ", 0) == 0);
  }
}

TEST_CASE("prompts: with a skip list, malformed lines are left out and reported (data.skip_malformed)", "[trainer][prompts]") {
  const std::string text = "{\"prompt\": \"a\"}\nnot json\n{\"prompt\": 3}\n\n{\"prompt\": \"b\"}\n{\"x\": 1}\n";
  std::vector<std::string> skipped;
  const std::vector<Prompt> p = parse_prompts_jsonl(text, "d.jsonl", "prompt", "answer", &skipped);
  REQUIRE(p.size() == 2);
  CHECK(p[0].text == "a");
  CHECK(p[1].text == "b");
  CHECK(p[1].line == 5);  // line numbers still the file's
  REQUIRE(skipped.size() == 3);
  CHECK(skipped[0].rfind("d.jsonl:2: not valid JSON", 0) == 0);
  CHECK(skipped[1].rfind("d.jsonl:3: ", 0) == 0);
  CHECK(skipped[2].rfind("d.jsonl:6: no \"prompt\"", 0) == 0);
  // Without the list the first one stops the read, as before.
  REQUIRE_THROWS_CONTAINING(parse_prompts_jsonl(text, "d.jsonl"), ConfigError, "d.jsonl:2: not valid JSON");
  // Nothing usable left: an error that says so, with the first reason.
  std::vector<std::string> all_bad;
  REQUIRE_THROWS_CONTAINING(parse_prompts_jsonl("x\ny\n", "e.jsonl", "prompt", "answer", &all_bad), ConfigError,
                            "e.jsonl: every line is malformed (2 skipped); the first: e.jsonl:1: not valid JSON");
}
