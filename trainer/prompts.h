// Prompt files: JSONL, one JSON object per line, as `fp8rl generate --prompts` and the trainer's
// data.train_files read them.
//
//   {"prompt": "What is 2 + 3?"}                                  text (raw, or a user turn with --chat)
//   {"prompt": [{"role": "user", "content": "What is 2 + 3?"}]}   a conversation (verl's layout)
//   {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}]}
//
// The reference answer the reward compares with sits under reward.answer_key ("answer"): a string
// or a number; any other type there is an error. `messages` wins over the prompt key when both are present (data.prompt_key names the key;
// "prompt" by default). Other fields (answers, ids) are allowed and ignored here. Blank lines are
// skipped; a trailing CR (CRLF files) is dropped. Roles are system, user, assistant (what
// core/hf/chat_template.h renders); contents are strings.
//
// Anything else is a ConfigError `<file>:<line>: <what is wrong>; expected ...`, so the user can
// open the file at the line: not JSON (or not UTF-8), not an object, neither key present, a key
// of the wrong type, an empty prompt or conversation, a message without a string role/content.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/hf/chat_template.h"

namespace fp8rl::trainer {

struct Prompt {
  std::string text;                       // the prompt key's text; empty when `messages` is set
  std::vector<hf::ChatMessage> messages;  // a conversation (from `messages`, or a list under the prompt key)
  std::string answer;                     // the answer key's value (reward.answer_key), a number as written; empty if absent
  int64_t line = 0;                       // 1-based line in the file
  bool is_chat() const { return !messages.empty(); }
};

// Reads `path` (a regular file; a missing file, a directory or a FIFO is a ConfigError). At least
// one prompt is required. With `skipped`, a malformed line is not an error: its message
// (`<file>:<line>: ...`) is appended there and the line left out (data.skip_malformed).
std::vector<Prompt> read_prompts_jsonl(const std::string& path, const std::string& prompt_key = "prompt",
                                       const std::string& answer_key = "answer", std::vector<std::string>* skipped = nullptr);

// Same, from the file's text; `file` is only used in messages.
std::vector<Prompt> parse_prompts_jsonl(std::string_view text, const std::string& file,
                                        const std::string& prompt_key = "prompt", const std::string& answer_key = "answer",
                                        std::vector<std::string>* skipped = nullptr);

}  // namespace fp8rl::trainer
