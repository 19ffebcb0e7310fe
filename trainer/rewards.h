// Built-in reward functions, chosen by reward.type in the recipe (core/recipe/recipe.h).
//
//   math         the final answer of the response (extract_math_answer) is numerically equal to
//                the reference (math_answers_equal). A reference holding a \boxed{} or "####"
//                (a full GSM8K/MATH solution) is reduced to its final answer the same way.
//   exact_match  the trimmed response equals the trimmed reference.
//   regex        reward.pattern (PCRE2, core/hf/regex.h) matches anywhere in the response.
//   format       reward.pattern matches the whole response (as \A(?:pattern)\z; no trimming).
//   synthetic    the verifier of data.synthetic_task (trainer/tasks.h).
//   command      not here: an external program is a process with state and a timeout, so it is a
//                class (trainer/reward_command.h) that scores a whole batch at once.
//
// Every function returns 1.0 or 0.0. A regex that runs out of its match budget on a response
// throws RuntimeFailure (core/hf/regex.h): the pattern backtracks without end and must be fixed.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/recipe/recipe.h"

namespace fp8rl::trainer {

// Owns its text: a batch of inputs is built from temporaries (each response's decoded text), and
// views into them once dangled (validation scored every example against freed memory).
struct RewardInput {
  std::string prompt;    // the prompt text (synthetic tasks rebuild their example from it)
  std::string response;  // the generated text without the stop token
  std::string answer;    // the reference: the JSONL answer_key field, or the task's answer
};

// Safe to call from several threads at once (no mutable state).
using RewardFunction = std::function<double(const RewardInput&)>;

// ConfigError for type command (use RewardCommand), an unknown type, an unknown synthetic task,
// or a pattern that does not compile.
RewardFunction make_reward_function(const recipe::RewardConfig& reward, const std::string& synthetic_task);

// Whether reward.type `type` scores a response against its example's reference answer (math,
// exact_match): data for it must give one on every line (trainer/data.cpp refuses a line without).
bool reward_needs_answer(const std::string& type);

// The final answer of a math response: the content of the last complete \boxed{...} (or
// \fbox{...}; nested braces kept), else what follows the last "####" on its line, else the last
// number in the text ("-1,234.5", "3/4"). nullopt when there is none.
std::optional<std::string> extract_math_answer(std::string_view response);

// Whether two final answers are the same. Both are normalised first: $...$, \( \), \left, \right,
// LaTeX spacing (\, \! \; \ ), "{,}", \%, %, ^\circ, \text{...}/\mbox{...} units (dropped when
// something else remains, else unwrapped), a leading "x =", a trailing period; \dfrac and \tfrac
// read as \frac, \frac{a}{b} and \frac ab become a/b. Then, when both read as numbers (an
// integer, a decimal, "1,000" with groups of three, a fraction p/q of those; optional sign and
// outer parentheses), they are compared as exact rationals of int64 (0.50 == 1/2 == \frac{1}{2});
// otherwise (or when a number does not fit in int64) as normalised strings. Empty answers, and
// answers over 1024 bytes (no final answer is that long), are never equal.
bool math_answers_equal(std::string_view a, std::string_view b);

}  // namespace fp8rl::trainer
