// A seeded mutation fuzzer that runs inside Catch2 (no libFuzzer needed in CI), shared by the
// fuzz tests of every parser a user's file reaches (issue 13).
//
// Each input is derived from a seed corpus by a few random mutations (bytes flipped, inserted,
// deleted, duplicated, truncated, tokens from a per-format dictionary spliced in). The parser
// under test either accepts it or throws; a thrown exception is classified by the CLI's own
// mapping (apps/cli_errors.h) and must give exit 1 or 2 with a message that one_line() keeps
// on one line. A crash fails the binary; a hang (one input parsing for more than
// kHangSeconds) prints the input and exits the binary with status 3 (a watchdog thread). Every
// run is bounded by an iteration count and a time budget (a few seconds per parser in CI); the
// budget never stops a run before `min_runs` inputs, so a slow or loaded CI machine still tries
// the same minimum (a count, not a clock, decides what CI covers).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "apps/cli_errors.h"
#include "core/util/error.h"
#include "tests/catch.h"

namespace fp8rl::fuzz {

class Mutator {
 public:
  Mutator(uint64_t seed, std::vector<std::string> dictionary) : rng_(seed), dict_(std::move(dictionary)) {}

  uint64_t below(uint64_t n) { return n == 0 ? 0 : std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }

  // 1-4 mutations of `s`.
  std::string mutate(std::string s) {
    for (uint64_t k = 0, n = 1 + below(4); k < n; ++k) mutate_once(s);
    return s;
  }

 private:
  void mutate_once(std::string& s) {
    static const char kRaw[] = "\n\r\t\0 :-[]{},#&*!|>'\"\\%?.0123456789eE\xff\xc3";
    static const std::string kBytes(kRaw, sizeof(kRaw) - 1);
    const size_t pos = below(s.size() + 1);
    switch (below(9)) {
      case 0:  // flip one byte to anything
        if (!s.empty()) s[below(s.size())] = static_cast<char>(below(256));
        break;
      case 1:  // insert a syntax byte
        s.insert(pos, 1, kBytes[below(kBytes.size())]);
        break;
      case 2:  // delete a range
        if (!s.empty()) s.erase(below(s.size()), 1 + below(16));
        break;
      case 3: {  // duplicate a range somewhere else
        if (s.empty()) break;
        const size_t b = below(s.size()), len = 1 + below(std::min<size_t>(64, s.size() - b));
        s.insert(pos, s.substr(b, len));
        break;
      }
      case 4:  // truncate
        s.resize(pos);
        break;
      case 5:  // repeat a token many times (deep nesting, long values)
        if (!dict_.empty()) {
          const std::string& t = dict_[below(dict_.size())];
          std::string rep;
          for (uint64_t i = 0, n = 1 + below(3000); i < n && rep.size() < 100000; ++i) rep += t;
          s.insert(pos, rep);
        }
        break;
      case 6:  // change a digit
        for (int tries = 0; tries < 8 && !s.empty(); ++tries) {
          const size_t i = below(s.size());
          if (s[i] >= '0' && s[i] <= '9') {
            s[i] = static_cast<char>('0' + below(10));
            break;
          }
        }
        break;
      default:  // splice a dictionary token
        if (!dict_.empty()) s.insert(pos, dict_[below(dict_.size())]);
        break;
    }
  }

  std::mt19937_64 rng_;
  std::vector<std::string> dict_;
};

inline constexpr double kHangSeconds = 20;

// Aborts the binary when the current input has run for more than kHangSeconds.
class Watchdog {
 public:
  Watchdog() : thread_([this] { loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void start(const std::string& input) {
    std::lock_guard<std::mutex> lock(mu_);
    input_ = input;
    since_ = std::chrono::steady_clock::now();
    busy_ = true;
  }
  void done() {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::milliseconds(200));
      if (busy_ && std::chrono::duration<double>(std::chrono::steady_clock::now() - since_).count() > kHangSeconds) {
        std::fprintf(stderr, "fuzz: HANG (> %.0f s) on input (escaped): %s\n", kHangSeconds, one_line(input_, 4000).c_str());
        std::fflush(stderr);
        std::_Exit(3);
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, busy_ = false;
  std::string input_;
  std::chrono::steady_clock::time_point since_;
  std::thread thread_;
};

struct Stats {
  int runs = 0, accepted = 0;
  std::map<int, int> by_code;  // exit code -> count
};

// Runs `parse` on up to `iterations` mutants of the corpus, stopping early when `budget_s` has
// passed and at least `min_runs` inputs ran. Every
// exception must map to exit 1 or 2 (or only 2 with `config_errors_only`: a user's file is never
// a runtime failure) with a non-empty message that stays one line.
inline Stats run(const std::vector<std::string>& corpus, std::vector<std::string> dictionary, uint64_t seed,
                 int iterations, int min_runs, double budget_s, const std::function<void(const std::string&)>& parse,
                 bool config_errors_only = true) {
  REQUIRE(!corpus.empty());
  // Longer runs than CI's: FP8RL_FUZZ_ITERATIONS, FP8RL_FUZZ_SECONDS, FP8RL_FUZZ_SEED (README);
  // FP8RL_FUZZ_DUMP=<file> receives a failing input.
  if (const char* v = std::getenv("FP8RL_FUZZ_ITERATIONS")) iterations = std::atoi(v);
  if (const char* v = std::getenv("FP8RL_FUZZ_SECONDS")) budget_s = std::atof(v);
  if (const char* v = std::getenv("FP8RL_FUZZ_SEED")) seed += std::strtoull(v, nullptr, 10);
  Mutator m(seed, std::move(dictionary));
  Stats st;
  Watchdog watchdog;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) {
    if (i >= min_runs && std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > budget_s) break;
    const std::string input = m.mutate(corpus[m.below(corpus.size())]);
    ++st.runs;
    watchdog.start(input);
    struct Done {
      Watchdog& w;
      ~Done() { w.done(); }
    } done{watchdog};
    try {
      parse(input);
      ++st.accepted;
      ++st.by_code[0];
    } catch (...) {
      const CliError e = describe_exception(std::current_exception());
      ++st.by_code[e.code];
      const std::string line = one_line(e.message);
      if ((e.code != 1 && e.code != 2) || (config_errors_only && e.code != 2) || e.message.empty() ||
          line.find('\n') != std::string::npos || line.size() > kMaxErrorBytes + 32) {
        if (const char* dump = std::getenv("FP8RL_FUZZ_DUMP")) {  // the failing input, byte for byte
          if (std::FILE* f = std::fopen(dump, "wb")) {
            std::fwrite(input.data(), 1, input.size(), f);
            std::fclose(f);
          }
        }
        INFO("input (escaped): " << one_line(input, 2000));
        INFO("exit " << e.code << ": " << line);
        FAIL("fuzz input " << i << " (seed " << seed << ") broke the error contract");
      }
    }
  }
  std::printf("fuzz: seed %llu: %d runs, %d accepted, %d exit 2, %d exit 1\n", static_cast<unsigned long long>(seed),
              st.runs, st.accepted, st.by_code[2], st.by_code[1]);
  return st;
}

}  // namespace fp8rl::fuzz
