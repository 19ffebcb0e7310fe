// The shape of a model, as HF's config.json describes it.
//
// Read before any weight is loaded: recipe validation needs the layer count (BF16 layer
// ranges) and whether the model is a mixture of experts (block quantization only).
#pragma once

#include <cstdint>
#include <string>

namespace fp8rl::hf {

struct ModelShape {
  std::string model_type;            // qwen3 | qwen2 | llama | qwen3_moe ...
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;     // dense MLP width
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;              // hidden_size / num_attention_heads unless given
  int64_t num_experts = 0;           // 0 = dense
  int64_t moe_intermediate_size = 0;
  bool tie_word_embeddings = false;

  bool is_moe() const { return num_experts > 0; }
};

// Bounds checked before anything is sized from a config (issue 13: a huge num_hidden_layers
// expanded a per-layer plan before anything else was checked). Far above released models.
inline constexpr int64_t kMaxLayers = 1024;
inline constexpr int64_t kMaxVocabSize = int64_t(1) << 24;
inline constexpr int64_t kMaxHiddenSize = int64_t(1) << 20;  // hidden, intermediate, head_dim
inline constexpr int64_t kMaxHeads = 4096;
inline constexpr int64_t kMaxExperts = 4096;
inline constexpr int64_t kMaxConfigBytes = int64_t(16) << 20;

// Parses `<dir>/config.json`. Throws ConfigError naming the file and key when the file is
// missing, is not JSON, lacks or mistypes a required key, or has sizes that cannot describe a
// transformer (non-positive, above the bounds above, query heads not a multiple of KV heads).
ModelShape read_hf_config(const std::string& model_dir);
// Same, from the file's text; `file` is only used in messages.
ModelShape parse_hf_config(const std::string& json_text, const std::string& file);

}  // namespace fp8rl::hf
