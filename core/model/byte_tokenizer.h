// Tokenizer files for randomly initialised checkpoints (`fp8rl init`): a byte-level BPE with no
// merges -- the 256 byte tokens, then the family's special tokens -- and the family's chat
// template, written as HF's tokenizer.json + tokenizer_config.json. Every text encodes (one id
// per byte), so a random model directory is complete: fp8rl's tokenizer, chat-template detection
// and HF transformers all load it. Real models bring their own trained tokenizers.
#pragma once

#include <cstdint>
#include <string>

#include "core/model/model_config.h"

namespace fp8rl::model {

// Number of ids the written tokenizer uses (256 bytes + special tokens); the model's vocab_size
// must be at least this.
int64_t byte_tokenizer_size(Family family);

// Writes <dir>/tokenizer.json and <dir>/tokenizer_config.json. Qwen families get ChatML
// (<|endoftext|>, <|im_start|>, <|im_end|>) and the Qwen2 pre-tokenizer split; Llama gets the
// Llama 3 specials and template and its split pattern.
void write_byte_tokenizer(const std::string& dir, Family family);

}  // namespace fp8rl::model
