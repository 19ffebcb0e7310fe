#include "core/hf/config.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <tuple>
#include <sstream>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/strings.h"

namespace fp8rl::hf {
namespace {

std::string clip(std::string s);

int64_t get_int(const nlohmann::json& j, const std::string& file, const char* key, bool required,
                int64_t fallback = 0) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw ConfigError(fmt::format("{}: missing required key '{}'", file, key));
    return fallback;
  }
  if (!it->is_number_integer() ||
      (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())))
    throw ConfigError(fmt::format("{}: key '{}' must be an integer, got {}", file, key, clip(it->dump())));
  return it->get<int64_t>();
}

// A dumped JSON value in a message: at most 64 characters.
std::string clip(std::string s) {
  if (s.size() > 64) s = s.substr(0, 61) + "...";
  return s;
}

}  // namespace

ModelShape read_hf_config(const std::string& model_dir) {
  const std::string file = (std::filesystem::path(model_dir) / "config.json").string();
  std::error_code ec;
  const auto st = std::filesystem::status(file, ec);
  if (!std::filesystem::exists(st))
    throw ConfigError(fmt::format("{}: cannot open (is model.path an HF checkpoint directory?){}", file,
                                  ec && ec != std::errc::no_such_file_or_directory ? " " + ec.message() : ""));
  if (!std::filesystem::is_regular_file(st)) throw ConfigError(fmt::format("{}: not a regular file", file));
  const auto size = std::filesystem::file_size(file, ec);
  if (ec || size > kMaxConfigBytes)
    throw ConfigError(fmt::format("{}: larger than {} bytes; not an HF config.json", file, kMaxConfigBytes));
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(fmt::format("{}: cannot open (is model.path an HF checkpoint directory?)", file));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError(fmt::format("{}: cannot read", file));
  return parse_hf_config(text.str(), file);
}

ModelShape parse_hf_config(const std::string& json_text, const std::string& file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for numbers beyond double
    throw ConfigError(fmt::format("{}: not valid JSON: {}", file, without_library_tag(e.what())));
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
  // Upper bounds before anything is sized from these (per-layer plans, embeddings): well above
  // every released model, far below what would wrap int64 products or exhaust memory.
  for (auto [key, v, hi] : {std::tuple{"vocab_size", s.vocab_size, kMaxVocabSize},
                            {"hidden_size", s.hidden_size, kMaxHiddenSize},
                            {"intermediate_size", s.intermediate_size, kMaxHiddenSize},
                            {"num_hidden_layers", s.num_hidden_layers, kMaxLayers},
                            {"num_attention_heads", s.num_attention_heads, kMaxHeads},
                            {"num_key_value_heads", s.num_key_value_heads, kMaxHeads}})
    if (v > hi) throw ConfigError(fmt::format("{}: {} must be <= {}, got {}", file, key, hi, v));
  if (s.intermediate_size < 0)
    throw ConfigError(fmt::format("{}: intermediate_size must be >= 0, got {}", file, s.intermediate_size));
  if (s.num_attention_heads % s.num_key_value_heads != 0)
    throw ConfigError(fmt::format("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", file,
                                  s.num_attention_heads, s.num_key_value_heads));
  s.head_dim = get_int(j, file, "head_dim", false, s.hidden_size / s.num_attention_heads);
  if (s.head_dim <= 0 || s.head_dim > kMaxHiddenSize)
    throw ConfigError(fmt::format("{}: head_dim must be in [1, {}], got {}", file, kMaxHiddenSize, s.head_dim));
  // Qwen-MoE names it num_experts, Mixtral num_local_experts.
  s.num_experts = get_int(j, file, "num_experts", false, get_int(j, file, "num_local_experts", false));
  s.moe_intermediate_size = get_int(j, file, "moe_intermediate_size", false);
  if (s.num_experts < 0 || s.num_experts > kMaxExperts)
    throw ConfigError(fmt::format("{}: num_experts must be in [0, {}], got {}", file, kMaxExperts, s.num_experts));
  if (s.moe_intermediate_size < 0 || s.moe_intermediate_size > kMaxHiddenSize)
    throw ConfigError(fmt::format("{}: moe_intermediate_size must be in [0, {}], got {}", file, kMaxHiddenSize,
                                  s.moe_intermediate_size));
  // Where config.json leaves it out, transformers' default for the model type: Qwen2Config,
  // Qwen3Config, Qwen3MoeConfig, LlamaConfig and MixtralConfig pass False (a tied default would drop
  // such a checkpoint's lm_head.weight and compute logits from the embeddings); PretrainedConfig's
  // True for the rest.
  static const std::set<std::string> untied_by_default{"qwen2", "qwen3", "qwen3_moe", "llama", "mixtral"};
  s.tie_word_embeddings = !untied_by_default.count(s.model_type);
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean())
      throw ConfigError(fmt::format("{}: key 'tie_word_embeddings' must be true or false, got {}", file, clip(it->dump())));
    s.tie_word_embeddings = it->get<bool>();
  }
  return s;
}

}  // namespace fp8rl::hf
