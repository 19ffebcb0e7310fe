#include "trainer/tasks.h"

#include <algorithm>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/util/atomic_file.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/strings.h"

namespace fp8rl::trainer {

namespace {

// splitmix64 (Steele, Lea, Flood 2014): a fixed, portable stream. Modulo bias of next() % n is
// below 2^-57 for the n used here.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
};

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ULL;
  return h;
}

std::string_view trim(std::string_view s) {
  const char* ws = " \t\n\r\v\f";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

void check_task(std::string_view task) {
  if (is_task(task)) return;
  const auto hint = closest_match(std::string(task), task_names());
  throw ConfigError(cat("unknown synthetic task '", task, "'; expected one of: ", join(task_names(), ", "),
                        hint ? cat(" (did you mean '", *hint, "'?)") : std::string()));
}

// --- countdown ---------------------------------------------------------------------------------

constexpr size_t kMaxCountdownResponse = 64;  // bytes; a longer response is not a short expression
constexpr int kMaxCountdownDepth = 16;        // parentheses; bounded anyway by the length above

int64_t apply(char op, int64_t a, int64_t b) { return op == '+' ? a + b : op == '-' ? a - b : a * b; }

// Standard precedence for a o1 b o2 c (the generated answers have no parentheses).
int64_t eval3(const int64_t n[3], char o1, char o2) {
  if (o2 == '*' && o1 != '*') return apply(o1, n[0], n[1] * n[2]);
  return apply(o2, apply(o1, n[0], n[1]), n[2]);
}

TaskExample make_countdown(SplitMix64& rng) {
  static constexpr char kOps[] = {'+', '-', '*'};
  for (;;) {
    const int64_t n[3] = {1 + rng.below(9), 1 + rng.below(9), 1 + rng.below(9)};
    const char o1 = kOps[rng.below(3)], o2 = kOps[rng.below(3)];
    const int64_t target = eval3(n, o1, o2);
    if (target <= 0) continue;  // keep targets positive: the prompt never needs a sign
    return {cat(n[0], ' ', n[1], ' ', n[2], '>', target, '='), cat(n[0], o1, n[1], o2, n[2])};
  }
}

struct CountdownPrompt {
  std::vector<int64_t> numbers;
  int64_t target = 0;
};

// "A B C>T=" (any count of numbers, 1..6 digits each). ConfigError otherwise: the prompt comes
// from make_task_examples, so a mismatch is a wiring bug or a hand-written prompt.
CountdownPrompt parse_countdown_prompt(std::string_view prompt) {
  CountdownPrompt out;
  size_t i = 0;
  auto number = [&](int64_t& v) {
    const size_t start = i;
    v = 0;
    while (i < prompt.size() && i - start < 6 && prompt[i] >= '0' && prompt[i] <= '9') v = v * 10 + (prompt[i++] - '0');
    return i > start;
  };
  bool ok = true;
  for (;;) {
    int64_t v = 0;
    if (!number(v)) { ok = false; break; }
    out.numbers.push_back(v);
    if (i < prompt.size() && prompt[i] == ' ') { ++i; continue; }
    break;
  }
  ok = ok && i < prompt.size() && prompt[i++] == '>' && number(out.target) && i + 1 == prompt.size() && prompt[i] == '=';
  if (!ok) throw ConfigError(cat("countdown prompt '", prompt, "' is not of the form 'A B C>TARGET='"));
  return out;
}

// Recursive descent over  expr := term (('+'|'-') term)*,  term := factor ('*' factor)*,
// factor := number | '(' expr ')'; spaces between tokens are allowed. Every number must be taken
// from `pool` (a multiset: each listed number at most once). nullopt for anything else, including
// int64 overflow.
class CountdownParser {
 public:
  CountdownParser(std::string_view s, std::vector<int64_t> pool) : s_(s), pool_(std::move(pool)) {}

  std::optional<int64_t> parse() {
    auto v = expr(0);
    skip();
    return v && i_ == s_.size() ? v : std::nullopt;
  }

 private:
  void skip() { while (i_ < s_.size() && s_[i_] == ' ') ++i_; }
  bool peek(char c) { skip(); return i_ < s_.size() && s_[i_] == c; }

  std::optional<int64_t> expr(int depth) {
    auto v = term(depth);
    while (v && (peek('+') || peek('-'))) {
      const char op = s_[i_++];
      const auto r = term(depth);
      if (!r) return std::nullopt;
      int64_t out = 0;
      if (op == '+' ? __builtin_add_overflow(*v, *r, &out) : __builtin_sub_overflow(*v, *r, &out)) return std::nullopt;
      v = out;
    }
    return v;
  }

  std::optional<int64_t> term(int depth) {
    auto v = factor(depth);
    while (v && peek('*')) {
      ++i_;
      const auto r = factor(depth);
      int64_t out = 0;
      if (!r || __builtin_mul_overflow(*v, *r, &out)) return std::nullopt;
      v = out;
    }
    return v;
  }

  std::optional<int64_t> factor(int depth) {
    if (peek('(')) {
      if (depth >= kMaxCountdownDepth) return std::nullopt;
      ++i_;
      const auto v = expr(depth + 1);
      if (!v || !peek(')')) return std::nullopt;
      ++i_;
      return v;
    }
    const size_t start = i_;
    int64_t v = 0;
    while (i_ < s_.size() && i_ - start < 7 && s_[i_] >= '0' && s_[i_] <= '9') v = v * 10 + (s_[i_++] - '0');
    if (i_ == start || (s_[start] == '0' && i_ - start > 1)) return std::nullopt;  // none, or a leading zero
    const auto it = std::find(pool_.begin(), pool_.end(), v);
    if (it == pool_.end()) return std::nullopt;  // not listed, or already used
    pool_.erase(it);
    return v;
  }

  std::string_view s_;
  size_t i_ = 0;
  std::vector<int64_t> pool_;
};

// The task's "A B C>T=" inside the prompt the reward sees, which is the rendered one: with a chat
// template it sits inside the template's markup (the last user message). Per '=' from the last,
// the longest run of digits, spaces and '>' before it that parses; the plain prompt (raw
// template) is the whole string.
CountdownPrompt find_countdown_prompt(std::string_view rendered) {
  auto in_form = [](char c) { return (c >= '0' && c <= '9') || c == ' ' || c == '>'; };
  for (size_t end = rendered.rfind('='); end != std::string_view::npos; end = rendered.rfind('=', end - 1)) {
    size_t lo = end;
    while (lo > 0 && in_form(rendered[lo - 1])) --lo;
    while (lo < end && rendered[lo] == ' ') ++lo;
    if (lo < end) {
      try {
        return parse_countdown_prompt(rendered.substr(lo, end + 1 - lo));
      } catch (const ConfigError&) {
      }
    }
    if (end == 0) break;
  }
  return parse_countdown_prompt(rendered);  // throws, quoting the prompt
}

double score_countdown(const TaskExample& example, std::string_view response) {
  CountdownPrompt p = find_countdown_prompt(example.prompt);
  if (response.size() > kMaxCountdownResponse) return 0.0;
  const auto v = CountdownParser(response, std::move(p.numbers)).parse();
  return v && *v == p.target ? 1.0 : 0.0;
}

}  // namespace

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> kNames{"addition", "copy", "countdown"};
  return kNames;
}

bool is_task(std::string_view name) {
  const auto& n = task_names();
  return std::find(n.begin(), n.end(), name) != n.end();
}

std::vector<TaskExample> make_task_examples(std::string_view task, int64_t count, uint64_t seed) {
  check_task(task);
  if (count < 0) throw ConfigError(cat("synthetic task '", task, "': count must be >= 0, got ", count));
  SplitMix64 rng{seed ^ fnv1a(task)};
  std::vector<TaskExample> out;
  out.reserve(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) {
    if (task == "addition") {
      const int64_t a = rng.below(100), b = rng.below(100);
      out.push_back({cat(a, '+', b, '='), cat(a + b)});
    } else if (task == "copy") {
      std::string s(static_cast<size_t>(3 + rng.below(4)), ' ');
      for (char& c : s) c = static_cast<char>('a' + rng.below(26));
      out.push_back({"copy " + s + "=", s});
    } else {
      out.push_back(make_countdown(rng));
    }
  }
  return out;
}

double score_task_response(std::string_view task, const TaskExample& example, std::string_view response) {
  check_task(task);
  response = trim(response);
  if (task == "countdown") return score_countdown(example, response);
  return response == trim(example.answer) ? 1.0 : 0.0;
}

void write_task_jsonl(std::string_view task, int64_t count, uint64_t seed, const std::string& path) {
  std::string text;
  for (const TaskExample& e : make_task_examples(task, count, seed)) {
    // ordered_json keeps the keys in the order a reader expects (prompt first).
    text += nlohmann::ordered_json{{"prompt", e.prompt}, {"answer", e.answer}, {"task", std::string(task)}}.dump();
    text += '\n';
  }
  write_file_atomic(path, text);
}

}  // namespace fp8rl::trainer
