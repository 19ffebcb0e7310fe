// Fuzz: the external reward protocol (trainer/reward_command.h), issue 13: what a reward
// program prints back. Each input is a reply: a real child process (`sh -c`) reads one byte of
// the batch, prints the mutated reply and exits; score() must return one finite reward per
// sample or refuse with one line naming the command -- never crash, hang or let another
// exception out. A reward program is the user's code, so its failures are runtime failures
// (exit 1), not config errors. A process per input: a few hundred inputs in CI.
#include <cmath>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz.h"
#include "tests/test_util.h"
#include "trainer/reward_command.h"

using namespace fp8rl;

TEST_CASE("fuzz: reward command replies are read without crash, hang or a stray exception", "[fuzz][reward_command]") {
  test::TempDir dir;
  const std::string reply = (dir.path() / "reply.jsonl").string();
  const std::vector<std::string> corpus = {"{\"reward\": 1.0}\n{\"reward\": 0}\n{\"reward\": -0.5}\n",
                                           "{\"index\": 2, \"reward\": 1}\n{\"index\": 0, \"reward\": 0.25}\n{\"index\": 1, \"reward\": 1e-3}\n"};
  const std::vector<std::string> dict = {"{", "}", "\n", "\"reward\": ", "\"index\": ", "NaN", "Infinity", "1e400", "-1",
                                         "3", "18446744073709551616", "null", "true", "\"1\"", "[1]", "\r\n", "\xff", " "};
  const std::vector<trainer::RewardInput> batch(3, trainer::RewardInput{"p", "x", "a"});
  const fuzz::Stats st = fuzz::run(
      corpus, dict, 4111, 400, 201, 4.0,
      [&](const std::string& text) {
        std::ofstream(reply, std::ios::binary | std::ios::trunc) << text;
        trainer::RewardCommand cmd("head -c 1 >/dev/null; cat '" + reply + "'", 10);
        const std::vector<double> r = cmd.score(batch);
        // Accepted: one finite reward per sample.
        if (r.size() != batch.size()) throw std::logic_error("score returned " + std::to_string(r.size()) + " rewards");
        for (double x : r)
          if (!std::isfinite(x)) throw std::logic_error("score returned a non-finite reward");
      },
      /*config_errors_only=*/false);
  INFO("runs " << st.runs << ", accepted " << st.accepted);
  CHECK(st.runs >= 201);
  CHECK(st.accepted > 0);
}
