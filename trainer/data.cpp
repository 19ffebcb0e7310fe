#include "trainer/data.h"

#include <random>

#include "core/util/error.h"
#include "core/util/log.h"
#include "trainer/prompts.h"
#include "trainer/rewards.h"
#include "trainer/tasks.h"

namespace fp8rl::trainer {

uint64_t mix_seed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (index + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

namespace {

Example tokenize(std::string text, std::string answer, std::string where, const recipe::DataConfig& d,
                 const hf::Tokenizer& tok, int64_t vocab_size) {
  Example e;
  std::vector<int32_t> ids = tok.encode(text);
  if (ids.empty()) throw ConfigError(where + ": the prompt encodes to no tokens");
  const auto max_len = static_cast<size_t>(d.max_prompt_length);
  if (ids.size() > max_len) {
    if (d.truncation == "error")
      throw ConfigError(cat(where, ": the prompt is ", ids.size(), " tokens, over data.max_prompt_length (", max_len,
                            "); raise it or set data.truncation: left | right"));
    if (d.truncation == "left") ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(max_len));
    else ids.resize(max_len);
    text = tok.decode(ids);
  }
  for (const int32_t t : ids)
    if (t < 0 || t >= vocab_size)
      throw ConfigError(cat(where, ": token id ", t, " is outside the model's vocabulary (", vocab_size,
                            "); the tokenizer ", tok.path(), " does not belong to the model"));
  e.prompt_ids = std::move(ids);
  e.prompt = std::move(text);
  e.answer = std::move(answer);
  e.where = std::move(where);
  return e;
}

}  // namespace

std::vector<Example> load_examples(const recipe::Recipe& r, const std::vector<std::string>& files, const hf::Tokenizer& tok,
                                   const std::optional<hf::ChatTemplate>& tmpl, int64_t vocab_size) {
  const recipe::DataConfig& d = r.data;
  std::vector<Example> out;
  auto render = [&](const std::vector<hf::ChatMessage>& messages, const std::string& where) {
    if (!tmpl) throw ConfigError(where + ": a conversation needs a chat template (model.chat_template)");
    return hf::render_chat(*tmpl, messages, /*add_generation_prompt=*/true);
  };
  // Plain text is fed as is under the raw template, else as one user turn.
  auto render_text = [&](const std::string& text, const std::string& where) {
    if (!tmpl || tmpl->format == hf::ChatFormat::raw) return text;
    return render({{"user", text}}, where);
  };
  if (files.empty()) {
    const std::vector<TaskExample> task = make_task_examples(d.synthetic_task, d.synthetic_num_prompts,
                                                             static_cast<uint64_t>(d.seed));
    for (size_t i = 0; i < task.size(); ++i) {
      const std::string where = cat("synthetic:", d.synthetic_task, ":", i);
      out.push_back(tokenize(render_text(task[i].prompt, where), task[i].answer, where, d, tok, vocab_size));
    }
    return out;
  }
  // Rewards that compare each response with the line's reference answer: a line without one
  // would be scored against "" at every step, which trains silently on nothing.
  const bool needs_answer = reward_needs_answer(r.reward.type);
  for (const std::string& file : files) {
    std::vector<std::string> skipped;
    for (Prompt& p : read_prompts_jsonl(file, d.prompt_key, r.reward.answer_key, d.skip_malformed ? &skipped : nullptr)) {
      const std::string where = cat(file, ":", p.line);
      if (needs_answer && p.answer.empty())
        throw ConfigError(cat(where, ": no reference answer under \"", r.reward.answer_key, "\" (reward.answer_key), which reward.type ",
                              r.reward.type, " compares each response with"));
      std::string text;
      try {
        text = p.is_chat() ? render(p.messages, where) : render_text(p.text, where);
      } catch (const ConfigError& e) {  // the recipe's template, not the line: never skipped
        throw ConfigError(where + ": " + e.what());
      }
      out.push_back(tokenize(std::move(text), std::move(p.answer), where, d, tok, vocab_size));
    }
    if (!skipped.empty())
      log::warn(cat(file, ": skipped ", skipped.size(), " malformed line", skipped.size() == 1 ? "" : "s",
                    " (data.skip_malformed); the first: ", skipped.front()));
  }
  return out;
}

DataOrder::DataOrder(int64_t size, uint64_t seed, bool shuffle) : size_(size), seed_(seed), shuffle_(shuffle) {
  FP8RL_CHECK(size > 0, "DataOrder: no examples");
  make_permutation();
}

void DataOrder::make_permutation() {
  perm_.resize(static_cast<size_t>(size_));
  for (int64_t i = 0; i < size_; ++i) perm_[static_cast<size_t>(i)] = i;
  if (!shuffle_) return;
  std::mt19937_64 rng(mix_seed(seed_, static_cast<uint64_t>(epoch_)));
  for (int64_t i = size_ - 1; i > 0; --i)  // Fisher-Yates with rng() % n: the same on every platform
    std::swap(perm_[static_cast<size_t>(i)], perm_[static_cast<size_t>(rng() % static_cast<uint64_t>(i + 1))]);
}

std::vector<int64_t> DataOrder::next(int64_t count) {
  std::vector<int64_t> out;
  while (static_cast<int64_t>(out.size()) < count) {
    if (cursor_ == size_) {
      ++epoch_;
      cursor_ = 0;
      make_permutation();
    }
    out.push_back(perm_[static_cast<size_t>(cursor_++)]);
  }
  return out;
}

void DataOrder::restore(int64_t epoch, int64_t cursor) {
  FP8RL_CHECK(epoch >= 0 && cursor >= 0 && cursor <= size_, "DataOrder::restore: position out of range");
  epoch_ = epoch;
  cursor_ = cursor;
  make_permutation();
}

}  // namespace fp8rl::trainer
