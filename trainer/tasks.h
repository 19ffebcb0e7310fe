// Synthetic tasks (data.synthetic_task): prompts the project makes itself, each with a verifier,
// so a run needs no downloaded data set.
//
// They are sized for the smallest model the project trains end to end (hidden 64, 4 layers, a
// byte-level tokenizer: one token per byte) after a short supervised warm-up: prompts and answers
// are a few bytes, and with the "raw" chat template the prompt text is fed as is and the ideal
// response is exactly the answer followed by EOS.
//
//   addition   "37+85="     -> "122"     a, b uniform in [0, 99]
//   copy       "copy abc="  -> "abc"     a lowercase string of length 3..6
//   countdown  "3 5 7>22="  -> "3*5+7"   3 numbers in [1, 9] and a target > 0; any expression of
//                                          + - * and parentheses that uses each listed number at
//                                          most once and equals the target scores 1. The stored
//                                          answer uses all three in the listed order.
//
// Examples come from our own splitmix64 stream (never std::uniform_int_distribution, whose output
// differs between standard libraries), so the same (task, count, seed) gives the same bytes on
// every platform; the stream depends on (task, seed) only, so a smaller count is a prefix of a
// larger one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fp8rl::trainer {

struct TaskExample {
  std::string prompt;  // fed as is (raw template)
  std::string answer;  // the reference response (countdown: one of the valid ones)
};

const std::vector<std::string>& task_names();  // {"addition", "copy", "countdown"}
bool is_task(std::string_view name);

// `count` (>= 0) examples. ConfigError for an unknown task (with a "did you mean") or count < 0.
std::vector<TaskExample> make_task_examples(std::string_view task, int64_t count, uint64_t seed);

// The verifier: 1.0 for a correct response, 0.0 otherwise. `response` is the generated text
// without the stop token; whitespace around it is ignored. addition and copy compare with the
// stored answer; countdown parses the response (see the table above; at most 64 bytes, anything
// else scores 0) and checks it against the numbers and target read from `example.prompt`.
// ConfigError for an unknown task or a countdown prompt not of the form "A B C>T=".
double score_task_response(std::string_view task, const TaskExample& example, std::string_view response);

// `fp8rl data TASK -o FILE`: one {"prompt": ..., "answer": ..., "task": ...} object per line,
// written atomically (core/util/atomic_file.h).
void write_task_jsonl(std::string_view task, int64_t count, uint64_t seed, const std::string& path);

}  // namespace fp8rl::trainer
