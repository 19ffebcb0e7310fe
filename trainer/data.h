// The training data of a run: prompts with their reference answers, tokenized once, and the
// order they are drawn in.
//
// Examples come from data.train_files (JSONL, trainer/prompts.h; the answer under
// reward.answer_key) or from a built-in synthetic task (trainer/tasks.h; data.synthetic_task,
// data.synthetic_num_prompts prompts drawn with data.seed). Prompt text is rendered with the chat
// template (model.chat_template; `raw` feeds it as is) and must fit data.max_prompt_length tokens
// after it: data.truncation says whether a longer prompt is an error naming file:line, or keeps
// its left or right end.
//
// The order is epoch-aware and reproducible from (data.seed, epoch) alone: epoch e visits a
// permutation drawn from a generator seeded with (seed, e) (the identity with data.shuffle off).
// A batch that runs past the end of an epoch continues in the next one, so no prompt is skipped
// or repeated within an epoch, and the position (epoch, cursor) is all a checkpoint needs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/hf/chat_template.h"
#include "core/hf/tokenizer.h"
#include "core/recipe/recipe.h"

namespace fp8rl::trainer {

struct Example {
  std::vector<int32_t> prompt_ids;  // after the chat template and truncation
  std::string prompt;               // the rendered prompt text (what the reward sees)
  std::string answer;               // reference answer ("" when the file has none)
  std::string where;                // "file:line" or "synthetic:<task>:<index>", for messages
};

// Reads and tokenizes `files` (or the synthetic task when `files` is empty). `vocab_size` is
// the model's: a token id at or beyond it is a ConfigError (the tokenizer belongs elsewhere).
std::vector<Example> load_examples(const recipe::Recipe& recipe, const std::vector<std::string>& files,
                                   const hf::Tokenizer& tok, const std::optional<hf::ChatTemplate>& tmpl,
                                   int64_t vocab_size);

class DataOrder {
 public:
  DataOrder(int64_t size, uint64_t seed, bool shuffle);
  // The next `count` example indices (crossing into the next epoch when this one ends).
  std::vector<int64_t> next(int64_t count);
  int64_t epoch() const { return epoch_; }
  int64_t cursor() const { return cursor_; }  // examples of this epoch already drawn
  int64_t size() const { return size_; }
  void restore(int64_t epoch, int64_t cursor);

 private:
  void make_permutation();
  int64_t size_;
  uint64_t seed_;
  bool shuffle_;
  int64_t epoch_ = 0, cursor_ = 0;
  std::vector<int64_t> perm_;
};

// A seed mixed with an index (splitmix64): independent streams per (seed, index).
uint64_t mix_seed(uint64_t seed, uint64_t index);

}  // namespace fp8rl::trainer
