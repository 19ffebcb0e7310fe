#include "trainer/rewards.h"

#include <cctype>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <string>

#include "core/hf/regex.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/strings.h"
#include "trainer/tasks.h"

namespace fp8rl::trainer {

namespace {

constexpr size_t kMaxMathAnswer = 1024;  // bytes

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool starts_with_at(std::string_view s, size_t i, std::string_view what) { return s.substr(i, what.size()) == what; }

// The index one past the '}' closing the group that opens at s[open] == '{', or npos. A
// backslash escapes the next character, so \{ and \} do not count.
size_t close_brace(std::string_view s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\') ++i;
    else if (s[i] == '{') ++depth;
    else if (s[i] == '}' && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}

// A LaTeX macro argument starting at s[i]: {group} (returned without braces), \command, or one
// character. `end` is set one past it; nullopt at the end of the text or on an unclosed group.
std::optional<std::string_view> latex_arg(std::string_view s, size_t i, size_t& end) {
  while (i < s.size() && s[i] == ' ') ++i;
  if (i >= s.size()) return std::nullopt;
  if (s[i] == '{') {
    end = close_brace(s, i);
    if (end == std::string_view::npos) return std::nullopt;
    return s.substr(i + 1, end - i - 2);
  }
  end = i + 1;
  if (s[i] == '\\') while (end < s.size() && is_alpha(s[end])) ++end;
  return s.substr(i, end - i);
}

// --- extraction -------------------------------------------------------------------------------

std::optional<std::string> last_boxed(std::string_view s) {
  std::optional<std::string> out;  // the complete box that starts last wins
  for (size_t i = 0; i < s.size(); ++i) {
    size_t j = i;
    if (starts_with_at(s, i, "\\boxed")) j += 6;
    else if (starts_with_at(s, i, "\\fbox")) j += 5;
    else continue;
    while (j < s.size() && s[j] == ' ') ++j;
    if (j >= s.size() || s[j] != '{') continue;
    const size_t end = close_brace(s, j);
    if (end != std::string_view::npos) out = std::string(s.substr(j + 1, end - j - 2));
  }
  return out;
}

// The last number: [-]digits[,ddd...][.digits][/digits]. A '-' is a sign only where it cannot be
// a binary minus (at the start, or after a character that is not a letter, digit or ')').
std::optional<std::string> last_number(std::string_view s) {
  std::optional<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    if (!is_digit(s[i])) { ++i; continue; }
    size_t start = i;
    if (start > 0 && s[start - 1] == '-' &&
        (start == 1 || !(is_alpha(s[start - 2]) || is_digit(s[start - 2]) || s[start - 2] == ')')))
      --start;
    while (i < s.size() && is_digit(s[i])) ++i;
    while (i + 3 < s.size() && s[i] == ',' && is_digit(s[i + 1]) && is_digit(s[i + 2]) && is_digit(s[i + 3]) &&
           (i + 4 >= s.size() || !is_digit(s[i + 4])))
      i += 4;
    if (i + 1 < s.size() && s[i] == '.' && is_digit(s[i + 1])) for (++i; i < s.size() && is_digit(s[i]);) ++i;
    if (i + 1 < s.size() && s[i] == '/' && is_digit(s[i + 1])) for (++i; i < s.size() && is_digit(s[i]);) ++i;
    out = std::string(s.substr(start, i - start));
  }
  return out;
}

// --- normalisation ----------------------------------------------------------------------------

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  size_t start = 0;
  for (size_t p = s.find(from); p != std::string::npos; start = p + from.size(), p = s.find(from, start))
    out.append(s, start, p - start).append(to);
  if (start == 0) return;  // nothing replaced
  s = out.append(s, start);
}

// Removes \name where the next character is not a letter (so \left goes, \leftarrow stays).
void remove_macro(std::string& s, std::string_view name) {
  for (size_t p = s.find(name); p != std::string::npos; p = s.find(name, p)) {
    const size_t e = p + name.size();
    if (e < s.size() && is_alpha(s[e])) ++p;
    else s.erase(p, name.size());
  }
}

// \text{...} and friends: units after a number are dropped ("5\text{ cm}" -> "5"); a text that
// is the whole answer is unwrapped ("\text{(B)}" -> "(B)").
std::string drop_text_groups(const std::string& s) {
  std::string dropped, unwrapped;
  for (size_t i = 0; i < s.size();) {
    size_t j = std::string::npos;
    for (std::string_view m : {"\\text", "\\textbf", "\\textrm", "\\mbox", "\\mathrm"}) {
      if (starts_with_at(s, i, m) && i + m.size() < s.size() && s[i + m.size()] == '{') j = i + m.size();
    }
    const size_t end = j == std::string::npos ? j : close_brace(s, j);
    if (end == std::string::npos) {
      dropped += s[i];
      unwrapped += s[i++];
      continue;
    }
    unwrapped += s.substr(j + 1, end - j - 2);
    i = end;
  }
  return trim(dropped).empty() ? unwrapped : dropped;
}

// \frac{a}{b} -> a/b, with parentheses around a part that is not a plain token ("(-3)/4").
// "(w * den + num)/den" for a mixed number's whole part w and integer fraction num/den (at most
// 18 digits each, den > 0), or nullopt (not integers, or past int64).
std::optional<std::string> mixed_number(std::string_view whole, std::string_view num, std::string_view den) {
  auto integer = [](std::string_view x) -> std::optional<int64_t> {
    if (x.empty() || x.size() > 18) return std::nullopt;
    int64_t v = 0;
    for (char c : x) {
      if (!is_digit(c)) return std::nullopt;
      v = v * 10 + (c - '0');
    }
    return v;
  };
  const auto w = integer(whole), n = integer(num), d = integer(den);
  if (!w || !n || !d || *d == 0) return std::nullopt;
  const __int128 total = static_cast<__int128>(*w) * *d + *n;
  if (total > std::numeric_limits<int64_t>::max()) return std::nullopt;
  return std::to_string(static_cast<int64_t>(total)) + "/" + std::to_string(*d);
}

std::string convert_fracs(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t e1 = 0, e2 = 0;
    std::optional<std::string_view> a, b;
    if (starts_with_at(s, i, "\\frac") && (a = latex_arg(s, i + 5, e1)) && (b = latex_arg(s, e1, e2))) {
      // A mixed number, 2\frac{1}{2} = 5/2 (not 21/2): whole-number digits just before, at the
      // start or after a sign or '(', and integer parts.
      size_t w = out.size();
      while (w > 0 && is_digit(out[w - 1])) --w;
      const bool whole = w < out.size() && (w == 0 || out[w - 1] == '-' || out[w - 1] == '+' || out[w - 1] == '(');
      if (whole) {
        if (const auto mixed = mixed_number(std::string_view(out).substr(w), *a, *b)) {
          out.resize(w);
          out += *mixed;
          i = e2;
          continue;
        }
      }
      auto part = [](std::string_view x) {
        std::string c = convert_fracs(x);
        for (char ch : c)
          if (!is_alpha(ch) && !is_digit(ch) && ch != '.') return "(" + c + ")";
        return c;
      };
      out += part(*a) + "/" + part(*b);
      i = e2;
    } else {
      out += s[i++];
    }
  }
  return out;
}

std::string normalize(std::string_view in) {
  std::string s(trim(in));
  for (std::string_view m : {"\\left", "\\right", "\\displaystyle"}) remove_macro(s, m);
  replace_all(s, "\\dfrac", "\\frac");
  replace_all(s, "\\tfrac", "\\frac");
  for (std::string_view junk : {"\\!", "\\,", "\\;", "\\:", "\\ ", "\\(", "\\)", "\\[", "\\]", "\\$", "$", "\\%", "%",
                                "^{\\circ}", "^\\circ", "\xC2\xB0" /* degree sign */})
    replace_all(s, junk, "");
  replace_all(s, "{,}", ",");
  s = drop_text_groups(s);
  std::string t;
  for (char c : s)
    if (!is_space(c)) t += c;
  if (t.size() > 2 && is_alpha(t[0]) && t[1] == '=') t.erase(0, 2);  // "x=5"
  while (!t.empty() && t.back() == '.') t.pop_back();
  return convert_fracs(t);
}

// --- exact rationals --------------------------------------------------------------------------

struct Rational {
  int64_t num = 0, den = 1;  // den > 0, reduced
};

std::optional<Rational> make_rational(__int128 num, __int128 den) {
  if (den == 0) return std::nullopt;
  if (den < 0) num = -num, den = -den;
  __int128 a = num < 0 ? -num : num, b = den;
  while (b != 0) a %= b, std::swap(a, b);  // a = gcd
  if (a > 1) num /= a, den /= a;
  if (num > INT64_MAX || num < -INT64_MAX || den > INT64_MAX) return std::nullopt;
  return Rational{static_cast<int64_t>(num), static_cast<int64_t>(den)};
}

// A number at s[i]: digits (or 1-3 digits then ",ddd" groups), an optional ".digits"; or
// ".digits". At most 18 significant digits, so it fits in int64.
std::optional<Rational> parse_unsigned(std::string_view s, size_t& i) {
  int64_t num = 0, den = 1;
  int digits = 0;
  auto take = [&](bool frac) {
    if (++digits > 18) return false;
    num = num * 10 + (s[i++] - '0');
    if (frac) den *= 10;
    return true;
  };
  const size_t start = i;
  while (i < s.size() && is_digit(s[i]))
    if (!take(false)) return std::nullopt;
  if (i < s.size() && s[i] == ',') {
    if (i - start < 1 || i - start > 3) return std::nullopt;
    while (i < s.size() && s[i] == ',') {
      ++i;
      for (int k = 0; k < 3; ++k)
        if (i >= s.size() || !is_digit(s[i]) || !take(false)) return std::nullopt;
    }
    if (i < s.size() && is_digit(s[i])) return std::nullopt;
  }
  const bool has_int = i > start;
  if (i < s.size() && s[i] == '.') {
    ++i;
    const size_t f = i;
    while (i < s.size() && is_digit(s[i]))
      if (!take(true)) return std::nullopt;
    if (i == f) return std::nullopt;
  } else if (!has_int) {
    return std::nullopt;
  }
  return make_rational(num, den);
}

// number, or ( [sign] number ).
std::optional<Rational> parse_atom(std::string_view s, size_t& i) {
  const bool paren = i < s.size() && s[i] == '(';
  if (paren) ++i;
  bool neg = false;
  if (paren && i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
  auto r = parse_unsigned(s, i);
  if (!r || (paren && (i >= s.size() || s[i++] != ')'))) return std::nullopt;
  if (neg) r->num = -r->num;
  return r;
}

// Whether the '(' at s[0] is closed by the last character (so "(1)/(2)" is not one group).
bool outer_parens(std::string_view s) {
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    depth += s[i] == '(' ? 1 : s[i] == ')' ? -1 : 0;
    if (depth == 0) return i + 1 == s.size();
  }
  return false;
}

// [sign] atom [/ atom], optionally wrapped in parentheses as a whole.
std::optional<Rational> parse_rational(std::string_view s) {
  while (s.size() >= 2 && s.front() == '(' && s.back() == ')' && outer_parens(s)) s = s.substr(1, s.size() - 2);
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
  auto r = parse_atom(s, i);
  if (r && i < s.size() && s[i] == '/') {
    ++i;
    const auto d = parse_atom(s, i);
    r = d ? make_rational(static_cast<__int128>(r->num) * d->den, static_cast<__int128>(r->den) * d->num) : std::nullopt;
  }
  if (!r || i != s.size()) return std::nullopt;
  if (neg) r->num = -r->num;
  return r;
}

}  // namespace

std::optional<std::string> extract_math_answer(std::string_view response) {
  if (auto b = last_boxed(response)) return b;
  if (const size_t p = response.rfind("####"); p != std::string_view::npos) {
    std::string_view rest = response.substr(p + 4);
    rest = trim(rest.substr(0, rest.find('\n')));
    if (!rest.empty()) return std::string(rest);
  }
  return last_number(response);
}

bool math_answers_equal(std::string_view a, std::string_view b) {
  // A final answer is short; this bound keeps normalisation (recursive for nested \frac) cheap.
  if (a.size() > kMaxMathAnswer || b.size() > kMaxMathAnswer) return false;
  const std::string na = normalize(a), nb = normalize(b);
  if (na.empty() || nb.empty()) return false;
  const auto ra = parse_rational(na), rb = parse_rational(nb);
  if (ra && rb) return static_cast<__int128>(ra->num) * rb->den == static_cast<__int128>(rb->num) * ra->den;
  return na == nb;
}

bool reward_needs_answer(const std::string& type) { return type == "math" || type == "exact_match"; }

RewardFunction make_reward_function(const recipe::RewardConfig& reward, const std::string& synthetic_task) {
  const std::string& type = reward.type;
  if (type == "math") {
    return [](const RewardInput& in) {
      const auto got = extract_math_answer(in.response);
      if (!got) return 0.0;
      // A reference that is a whole worked solution is reduced to its final answer first.
      std::optional<std::string> ref(std::string(in.answer));
      const std::string_view a = in.answer;
      if (a.find("\\boxed") != a.npos || a.find("\\fbox") != a.npos || a.find("####") != a.npos)
        ref = extract_math_answer(a);
      return ref && math_answers_equal(*got, *ref) ? 1.0 : 0.0;
    };
  }
  if (type == "exact_match")
    return [](const RewardInput& in) { return trim(in.response) == trim(in.answer) ? 1.0 : 0.0; };
  if (type == "regex") {
    auto re = std::make_shared<const hf::Regex>(reward.pattern, "reward.pattern");
    return [re](const RewardInput& in) { return re->search(in.response) ? 1.0 : 0.0; };
  }
  if (type == "format") {
    hf::Regex check(reward.pattern, "reward.pattern");  // errors about the pattern as the user wrote it
    // \E ends a trailing \Q...; (?:...) keeps group numbers. A pattern ending in a (?x) comment
    // cannot be wrapped: that fails to compile here, with this message.
    auto re = std::make_shared<const hf::Regex>("\\A(?:" + reward.pattern + "\\E)\\z",
                                                "reward.pattern (format matches it as \\A(?:pattern)\\z)");
    return [re](const RewardInput& in) { return re->search(in.response) ? 1.0 : 0.0; };
  }
  if (type == "synthetic") {
    if (!is_task(synthetic_task))
      throw ConfigError(cat("reward.type: synthetic scores data.synthetic_task, which must be one of: ",
                            join(task_names(), ", "), "; got '", synthetic_task, "'"));
    return [task = synthetic_task](const RewardInput& in) {
      return score_task_response(task, TaskExample{std::string(in.prompt), std::string(in.answer)}, in.response);
    };
  }
  if (type == "command")
    throw ConfigError(cat("reward.type: command runs reward.command as a separate process; the trainer scores it "
                          "with RewardCommand (trainer/reward_command.h), not make_reward_function"));
  throw ConfigError(cat("reward.type: unknown type '", type, "'; expected math, exact_match, regex, format, synthetic "
                        "or command"));
}

}  // namespace fp8rl::trainer
