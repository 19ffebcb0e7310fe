// Fuzz: prompt JSONL files (trainer/prompts.h: `fp8rl generate --prompts`, the trainer's
// data.train_files), issue 13. Seeded, bounded: a few seconds.
#include <string>
#include <vector>

#include "tests/fuzz/fuzz.h"
#include "trainer/prompts.h"

using namespace fp8rl;

TEST_CASE("fuzz: prompt JSONL parses without crash, hang or a stray exception", "[fuzz][prompts_jsonl]") {
  const std::vector<std::string> corpus = {
      "{\"prompt\": \"What is 2 + 3?\"}\n{\"prompt\": \"Say hi\", \"answer\": \"hi\"}\n",
      "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"2+2?\"}]}\n",
      "{\"prompt\": [{\"role\": \"user\", \"content\": \"x\"}]}\r\n\r\n{\"prompt\": \"y\"}\r\n"};
  const std::vector<std::string> dict = {
      "{", "}", "[", "]", "\"", ":", ",", "\n", "\r\n", "null", "true", "1e400", "\"prompt\": ", "\"messages\": ",
      "\"role\": ", "\"content\": ", "\"assistant\"", "\"tool\"", "\"\\u0000\"", "\"\\ud800\"", "\xff", "[[[[[[[[",
      "{\"a\":{\"a\":", "\"\""};
  const fuzz::Stats st = fuzz::run(corpus, dict, 2207, 20000, 1001, 3.0, [&](const std::string& text) {
    const std::vector<trainer::Prompt> prompts = trainer::parse_prompts_jsonl(text, "prompts.jsonl");
    // Whatever is accepted is a usable prompt: text or a non-empty conversation, on a real line.
    REQUIRE(!prompts.empty());
    for (const trainer::Prompt& p : prompts) {
      REQUIRE(p.line >= 1);
      REQUIRE((p.is_chat() || !p.text.empty()));
    }
  });
  INFO("runs " << st.runs << ", accepted " << st.accepted);
  CHECK(st.runs >= 1001);
  CHECK(st.accepted > 0);
}
