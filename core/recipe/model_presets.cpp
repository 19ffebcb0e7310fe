#include "core/recipe/model_presets.h"

namespace fp8rl::recipe {
namespace {

struct Preset {
  const char* name;
  int64_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
  bool tied;
};

// Qwen3 dense family (config.json of the released checkpoints); "tiny" keeps the ratios
// (GQA 2:1, explicit head_dim) at CPU-test size.
constexpr Preset kPresets[] = {
    {"tiny", 64, 192, 4, 4, 2, 16, 512, true},
    // ~76M parameters on the byte tokenizer: the FP8-vs-BF16 experiment's model (docs/EXPERIMENT.md);
    // every projection dimension a multiple of 128, so FP8 block scaling needs no padding.
    {"76m", 768, 2048, 12, 12, 4, 64, 512, true},
    {"0.6b", 1024, 3072, 28, 16, 8, 128, 151936, true},
    {"1.7b", 2048, 6144, 28, 16, 8, 128, 151936, true},
    {"4b", 2560, 9728, 36, 32, 8, 128, 151936, true},
    {"8b", 4096, 12288, 36, 32, 8, 128, 151936, false},
    {"14b", 5120, 17408, 40, 40, 8, 128, 151936, false},
    {"32b", 5120, 25600, 64, 64, 8, 128, 151936, false},
};

}  // namespace

std::optional<hf::ModelShape> qwen3_preset(const std::string& name) {
  for (const auto& p : kPresets) {
    if (name != p.name) continue;
    hf::ModelShape s;
    s.model_type = "qwen3";
    s.hidden_size = p.hidden;
    s.intermediate_size = p.intermediate;
    s.num_hidden_layers = p.layers;
    s.num_attention_heads = p.heads;
    s.num_key_value_heads = p.kv_heads;
    s.head_dim = p.head_dim;
    s.vocab_size = p.vocab;
    s.tie_word_embeddings = p.tied;
    return s;
  }
  return std::nullopt;
}

std::vector<std::string> qwen3_preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.push_back(p.name);
  return names;
}

}  // namespace fp8rl::recipe
