// The external reward command (trainer/reward_command.h), driven by small sh and python3 scripts
// written into a temporary directory: the JSONL protocol (in order, by index, across batches),
// and every failure a user's scorer can produce, each a RuntimeFailure naming the command. No
// test may leave a process behind or die of SIGPIPE.
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "trainer/reward_command.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

namespace {

// Reads the JSONL requests and answers 1 when response == answer (after strip), else 0.
constexpr const char* kPythonScorer = R"(import json, sys
while True:
    line = sys.stdin.readline()
    if not line:
        break
    d = json.loads(line)
    r = 1.0 if d["response"].strip() == d["answer"].strip() else 0.0
    print(json.dumps({"reward": r}), flush=True)
)";

// Reads a whole batch of `n` requests (n = argv[1]) and answers them in reverse order, by index;
// the reward is a running count across batches, which shows the process is long-lived.
constexpr const char* kPythonReversed = R"(import json, sys
n = int(sys.argv[1]); seen = 0
while True:
    batch = [json.loads(sys.stdin.readline() or "null") for _ in range(n)]
    if batch[0] is None:
        break
    for d in reversed(batch):
        seen += 1
        print(json.dumps({"index": d["index"], "reward": seen + d["index"] / 10}), flush=True)
)";

std::vector<RewardInput> batch_of(size_t n, std::string_view response = "x") {
  return std::vector<RewardInput>(n, RewardInput{"p", std::string(response), "x"});
}

size_t open_fds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

bool reaped(int pid) { return pid > 0 && kill(pid, 0) != 0 && errno == ESRCH; }

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// A shell line for `sh -c`: each script is run by path, so the command named in errors is short.
std::string sh(const test::TempDir& dir, const std::string& name, const std::string& body) {
  return "sh " + dir.write(name, body);
}

}  // namespace

TEST_CASE("reward command: a python scorer over several batches, and the destructor reaps it",
          "[trainer][reward_command]") {
  test::TempDir dir;
  const size_t fds_before = open_fds();
  int pid = -1;
  {
    RewardCommand cmd("python3 " + dir.write("score.py", kPythonScorer), 30);
    pid = cmd.pid();
    REQUIRE(pid > 0);
    const std::vector<RewardInput> batch{{"2+2=", "4", "4"}, {"2+2=", " 5\n", "5"}, {"q", "no", "yes"},
                                         {"q", "  caf\xc3\xa9 \"quoted\"\n\t", "caf\xc3\xa9 \"quoted\""}};
    CHECK(cmd.score(batch) == std::vector<double>{1, 1, 0, 1});
    CHECK(cmd.score({}).empty());
    // A batch bigger than a pipe buffer (two 200 KB responses), answered line by line as it is written.
    const std::string big(200000, 'y');
    std::vector<RewardInput> large(300, RewardInput{"p", "x", "x"});
    large[7] = {"p", big, big};
    large[8] = {"p", big, "z"};
    const std::vector<double> r = cmd.score(large);
    REQUIRE(r.size() == 300);
    CHECK(r[7] == 1.0);
    CHECK(r[8] == 0.0);
    CHECK(r[299] == 1.0);
    // Invalid UTF-8 in a response is sent as U+FFFD, not a JSON error.
    CHECK(cmd.score({{"p", "\xff\xfe", "x"}}) == std::vector<double>{0});
  }
  CHECK(reaped(pid));
  CHECK(open_fds() == fds_before);  // both pipe ends closed
}

TEST_CASE("reward command: answers by index, in any order, from one long-lived process", "[trainer][reward_command]") {
  test::TempDir dir;
  RewardCommand cmd("python3 " + dir.write("rev.py", kPythonReversed) + " 3", 30);
  // Answered 2, 1, 0: the first line written is for index 2 (count 1).
  CHECK(cmd.score(batch_of(3)) == std::vector<double>{3.0, 2.1, 1.2});
  CHECK(cmd.score(batch_of(3)) == std::vector<double>{6.0, 5.1, 4.2});
}

TEST_CASE("reward command: a shell loop, blank lines and integer rewards are fine", "[trainer][reward_command]") {
  test::TempDir dir;
  RewardCommand cmd(sh(dir, "half.sh", "while IFS= read -r line; do echo; echo '{\"reward\": 2}'; done\n"), 30);
  CHECK(cmd.score(batch_of(5)) == std::vector<double>(5, 2.0));
  CHECK(cmd.score(batch_of(1)) == std::vector<double>{2.0});
}

TEST_CASE("reward command: a command that exits says so with its status, and stays failed",
          "[trainer][reward_command]") {
  test::TempDir dir;
  RewardCommand cmd(sh(dir, "exit.sh", "read -r line\nexit 3\n"), 30);
  REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(2)), RuntimeFailure, "exited with status 3");
  CHECK(cmd.pid() == -1);
  REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(2)), RuntimeFailure, "exit.sh' exited with status 3");
}

TEST_CASE("reward command: a command that exits without reading a large batch", "[trainer][reward_command]") {
  test::TempDir dir;
  // It reads one byte first, so it exits while the batch is being written (exiting at once would
  // race the first write and be reported as "between batches" instead).
  RewardCommand cmd(sh(dir, "quit.sh", "head -c 1 >/dev/null\nexit 4\n"), 30);
  const std::string big(100000, 'z');
  REQUIRE_THROWS_CONTAINING(cmd.score(std::vector<RewardInput>(20, RewardInput{"p", big, "a"})), RuntimeFailure,
                            "exited with status 4 (it answered 0 of 20 samples");
}

TEST_CASE("reward command: a command that closes its stdin is EPIPE, not a SIGPIPE that kills fp8rl",
          "[trainer][reward_command]") {
  // `exec`: no shell is left holding the pipe, so once python closes fd 0 nothing reads it: EPIPE.
  // It says so by creating a file: python can take seconds to start on a loaded machine, and a
  // write before the close would only fill the pipe and wait for the timeout.
  test::TempDir dir;
  const std::string closed = (std::filesystem::path(dir.path()) / "closed").string();
  const std::string command =
      "exec python3 -c 'import os, time; os.close(0); open(\"" + closed + "\", \"w\").close(); time.sleep(30)'";
  RewardCommand cmd(command, 30);
  for (int i = 0; i < 600 && !std::filesystem::exists(closed); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(std::filesystem::exists(closed));
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(1)), RuntimeFailure, "closed its stdin (it answered 0 of 1");
  CHECK(seconds_since(t0) < RewardCommand::kExitGraceSeconds + 3);
  // We are alive, so the write's SIGPIPE was blocked; it is not left pending, and the mask is back.
  sigset_t mask, pending;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  sigpending(&pending);
  CHECK_FALSE(sigismember(&mask, SIGPIPE));
  CHECK_FALSE(sigismember(&pending, SIGPIPE));
}

TEST_CASE("reward command: a command that exits between batches", "[trainer][reward_command]") {
  test::TempDir dir;
  RewardCommand cmd(sh(dir, "once.sh", "read -r line\necho '{\"reward\": 1}'\nexit 5\n"), 30);
  CHECK(cmd.score(batch_of(1)) == std::vector<double>{1});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(1)), RuntimeFailure, "exited with status 5 between batches");
}

TEST_CASE("reward command: a missing program is exit status 127", "[trainer][reward_command]") {
  RewardCommand cmd("/nonexistent/fp8rl-reward-scorer", 30);
  REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(1)), RuntimeFailure,
                            "reward command '/nonexistent/fp8rl-reward-scorer' exited with status 127 (command not found?)");
}

TEST_CASE("reward command: expect_running refuses a command that dies at once, keeps one that runs",
          "[trainer][reward_command]") {
  RewardCommand missing("/nonexistent/fp8rl-reward-scorer", 30);
  // The wait ends when sh exits, long before 30 s.
  REQUIRE_THROWS_CONTAINING(missing.expect_running(30), ConfigError,
                            "reward.command: '/nonexistent/fp8rl-reward-scorer' exited with status 127 (command not "
                            "found?) right after it started");
  CHECK(missing.pid() == -1);
  REQUIRE_THROWS_CONTAINING(missing.score(batch_of(1)), RuntimeFailure, "status 127");
  test::TempDir dir;
  RewardCommand ok(sh(dir, "echo.sh", "while read -r line; do echo '{\"reward\": 2}'; done\n"), 30);
  ok.expect_running(0.2);
  CHECK(ok.score(batch_of(2)) == std::vector<double>{2, 2});
  // One that exits before any batch says so.
  RewardCommand quits(sh(dir, "quits.sh", "exit 5\n"), 30);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  REQUIRE_THROWS_CONTAINING(quits.score(batch_of(1)), RuntimeFailure, "exited with status 5 before its first batch");
}

TEST_CASE("reward command: killed by a signal, or a program it ran was", "[trainer][reward_command]") {
  test::TempDir dir;
  RewardCommand self("read -r line; kill -SEGV $$", 30);  // $$: the /bin/sh that fp8rl started
  REQUIRE_THROWS_CONTAINING(self.score(batch_of(1)), RuntimeFailure, "was killed by signal 11 (Segmentation fault)");
  RewardCommand inner(sh(dir, "segv.sh", "read -r line\nkill -SEGV $$\n"), 30);  // the outer sh reports 128 + 11
  REQUIRE_THROWS_CONTAINING(inner.score(batch_of(1)), RuntimeFailure,
                            "exited with status 139 (128 + signal 11: Segmentation fault)");
}

TEST_CASE("reward command: too slow: killed at the timeout, with what it had answered", "[trainer][reward_command]") {
  test::TempDir dir;
  const std::string marker = (dir.path() / "still-running").string();
  // Answers the first sample, then sleeps in a child of the shell: the whole group is killed.
  RewardCommand cmd(sh(dir, "slow.sh", "read -r line\necho '{\"reward\": 1}'\nsleep 30\ntouch " + marker + "\n"), 0.5);
  const int pid = cmd.pid();
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(3)), RuntimeFailure,
                            "did not answer 3 samples within 0.5 s (it answered 1); it was killed");
  CHECK(seconds_since(t0) < 5);
  CHECK(reaped(pid));
  CHECK_FALSE(std::filesystem::exists(marker));
}

TEST_CASE("reward command: fewer answers than samples", "[trainer][reward_command]") {
  test::TempDir dir;
  SECTION("then it exits") {
    RewardCommand cmd(sh(dir, "one.sh", "read -r line\necho '{\"reward\": 1}'\n"), 30);
    REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(3)), RuntimeFailure, "exited with status 0 (it answered 1 of 3 samples");
  }
  SECTION("then it waits") {
    // Answers every other line, so a batch of 3 gets 1 answer and the scorer waits for more input.
    RewardCommand cmd(sh(dir, "every_other.sh",
                         "while IFS= read -r a; do IFS= read -r b; echo '{\"reward\": 1}'; done\n"), 0.5);
    REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(3)), RuntimeFailure, "(it answered 1); it was killed");
  }
  SECTION("or more answers than samples") {
    // printf writes both lines at once, so they arrive in the same batch.
    RewardCommand cmd(sh(dir, "twice.sh", "while IFS= read -r a; do printf '{\"reward\": 1}\\n{\"reward\": 2}\\n'; done\n"),
                      30);
    REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(1)), RuntimeFailure, "(more answers than samples): '{\"reward\": 2}'");
  }
}

TEST_CASE("reward command: garbage answers are quoted (cut to 200 bytes)", "[trainer][reward_command]") {
  test::TempDir dir;
  struct Case {
    std::string line;
    std::string needle;
  };
  const std::vector<Case> cases{
      {"hello", "(not valid JSON): 'hello'"},
      {"[1]", "(not a JSON object): '[1]'"},
      {"{\"score\": 1}", "(no numeric \"reward\"): '{\"score\": 1}'"},
      {"{\"reward\": \"1\"}", "no numeric \"reward\""},
      {"{\"reward\": true}", "no numeric \"reward\""},
      {"{\"reward\": NaN}", "(not valid JSON)"},
      {"{\"reward\": 1e999}", "(not valid JSON)"},  // out of double's range: nlohmann rejects it
      {"{\"reward\": 1, \"index\": 5}", "\"index\" is not an integer in [0, 2)"},
      {"{\"reward\": 1, \"index\": 0.5}", "\"index\" is not an integer"},
      {std::string(300, 'a'), "'" + std::string(200, 'a') + "...' (300 bytes)"},
  };
  for (const Case& c : cases) {
    INFO(c.line);
    RewardCommand cmd(sh(dir, "garbage.sh", "read -r line\necho '" + c.line + "'\nsleep 30\n"), 30);
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE_THROWS_CONTAINING(cmd.score(batch_of(2)), RuntimeFailure, c.needle);
    CHECK(seconds_since(t0) < 5);
  }
  // Two answers for one sample.
  RewardCommand dup(sh(dir, "dup.sh", "while IFS= read -r a; do echo '{\"index\": 0, \"reward\": 1}'; done\n"), 30);
  REQUIRE_THROWS_CONTAINING(dup.score(batch_of(2)), RuntimeFailure, "a second answer for sample 0");
}

TEST_CASE("reward command: the destructor kills a command that ignores EOF", "[trainer][reward_command]") {
  test::TempDir dir;
  int pid = -1;
  const auto t0 = std::chrono::steady_clock::now();
  {
    RewardCommand cmd(sh(dir, "stubborn.sh", "trap '' TERM\nwhile true; do sleep 1; done\n"), 30);
    pid = cmd.pid();
  }
  CHECK(reaped(pid));
  CHECK(seconds_since(t0) < RewardCommand::kExitGraceSeconds + 3);
}
