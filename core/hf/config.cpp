#include "core/hf/config.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/util/error.h"

namespace fp8rl::hf {
namespace {

int64_t get_int(const nlohmann::json& j, const std::string& file, const char* key, bool required,
                int64_t fallback = 0) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw ConfigError(fmt::format("{}: missing required key '{}'", file, key));
    return fallback;
  }
  if (!it->is_number_integer())
    throw ConfigError(fmt::format("{}: key '{}' must be an integer, got {}", file, key, it->dump()));
  return it->get<int64_t>();
}

}  // namespace

ModelShape read_hf_config(const std::string& model_dir) {
  const std::string file = (std::filesystem::path(model_dir) / "config.json").string();
  std::ifstream in(file);
  if (!in) throw ConfigError(fmt::format("{}: cannot open (is model.path an HF checkpoint directory?)", file));
  std::stringstream text;
  text << in.rdbuf();
  return parse_hf_config(text.str(), file);
}

ModelShape parse_hf_config(const std::string& json_text, const std::string& file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError(fmt::format("{}: not valid JSON: {}", file, e.what()));
  }
  if (!j.is_object()) throw ConfigError(fmt::format("{}: expected a JSON object", file));
  ModelShape s;
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) s.model_type = it->get<std::string>();
  else throw ConfigError(fmt::format("{}: missing required string key 'model_type'", file));
  s.vocab_size = get_int(j, file, "vocab_size", true);
  s.hidden_size = get_int(j, file, "hidden_size", true);
  s.intermediate_size = get_int(j, file, "intermediate_size", false);
  s.num_hidden_layers = get_int(j, file, "num_hidden_layers", true);
  s.num_attention_heads = get_int(j, file, "num_attention_heads", true);
  s.num_key_value_heads = get_int(j, file, "num_key_value_heads", false, s.num_attention_heads);
  for (auto [key, v] : {std::pair{"vocab_size", s.vocab_size}, {"hidden_size", s.hidden_size},
                        {"num_hidden_layers", s.num_hidden_layers}, {"num_attention_heads", s.num_attention_heads},
                        {"num_key_value_heads", s.num_key_value_heads}})
    if (v <= 0) throw ConfigError(fmt::format("{}: {} must be > 0, got {}", file, key, v));
  if (s.num_attention_heads % s.num_key_value_heads != 0)
    throw ConfigError(fmt::format("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", file,
                                  s.num_attention_heads, s.num_key_value_heads));
  s.head_dim = get_int(j, file, "head_dim", false, s.hidden_size / s.num_attention_heads);
  if (s.head_dim <= 0) throw ConfigError(fmt::format("{}: head_dim must be > 0, got {}", file, s.head_dim));
  // Qwen-MoE names it num_experts, Mixtral num_local_experts.
  s.num_experts = get_int(j, file, "num_experts", false, get_int(j, file, "num_local_experts", false));
  s.moe_intermediate_size = get_int(j, file, "moe_intermediate_size", false);
  // HF's PretrainedConfig defaults tie_word_embeddings to true; released Qwen/Llama configs set it.
  s.tie_word_embeddings = true;
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean())
      throw ConfigError(fmt::format("{}: key 'tie_word_embeddings' must be true or false, got {}", file, it->dump()));
    s.tie_word_embeddings = it->get<bool>();
  }
  return s;
}

}  // namespace fp8rl::hf
