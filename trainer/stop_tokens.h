// The stop tokens of a model directory, found as HF transformers finds them: what `fp8rl
// generate` and the trainer's rollouts stop sampling at.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/hf/chat_template.h"
#include "core/hf/tokenizer.h"

namespace fp8rl::trainer {

struct StopTokens {
  std::vector<int32_t> ids;
  std::string source;  // where they came from, for the log
};

// generation_config.json's eos_token_id (an id or a list), else tokenizer_config.json's eos_token
// (a string or {"content": ...}), else the chat template's end of turn. With a chat template in use
// its end of turn is added too (a base model's EOS is <|endoftext|>, but its chat turns end with
// <|im_end|>).
// Throws ConfigError naming the file for a malformed config or an id outside the vocabulary.
StopTokens resolve_stop_tokens(const std::string& model_dir, const std::string& tokenizer_dir, const hf::Tokenizer& tok,
                               const std::optional<hf::ChatTemplate>& tmpl, bool chat_in_use);

// Each id's bytes (Tokenizer::id_to_bytes), the table the engine matches stop strings on
// (rollout/stop_strings.h; EngineConfig::token_bytes).
std::shared_ptr<const std::vector<std::string>> token_byte_table(const hf::Tokenizer& tok);

}  // namespace fp8rl::trainer
