// Randomly initialised HF checkpoints (quickstart, tests, benchmarks): config.json, a BF16
// model.safetensors and byte-level tokenizer files (byte_tokenizer.h) that HF transformers and
// fp8rl both load.
#pragma once

#include <cstdint>
#include <string>

#include "core/hf/config.h"

namespace fp8rl::model {

// Writes `<out_dir>/config.json`, `<out_dir>/model.safetensors`, and tokenizer.json +
// tokenizer_config.json when vocab_size holds the byte tokenizer (created if needed) for
// `arch` ("qwen3" | "qwen2" | "llama"; else ConfigError) at `shape` (e.g. qwen3_preset("0.6b");
// shape.model_type is ignored). Init as HF's _init_weights: linear and embedding weights
// normal(0, 0.02), RMSNorm weights 1, biases 0; drawn in float32 from a CPU generator seeded with
// `seed` (same seed, same file), stored as BF16. The config takes the family's HF defaults for
// RoPE and epsilon (default_model_config).
void write_random_checkpoint(const std::string& out_dir, const std::string& arch, const hf::ModelShape& shape,
                             uint64_t seed);

}  // namespace fp8rl::model
