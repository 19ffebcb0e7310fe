#include "core/model/model_config.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::model {
namespace {

using nlohmann::json;

int64_t get_int(const json& j, const std::string& file, const char* key, bool required, int64_t fallback = 0) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw ConfigError(cat(file, ": missing required key '", key, "'"));
    return fallback;
  }
  if (!it->is_number_integer())
    throw ConfigError(cat(file, ": key '", key, "' must be an integer, got ", it->dump()));
  return it->get<int64_t>();
}

double get_num(const json& j, const std::string& file, const std::string& key, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw ConfigError(cat(file, ": key '", key, "' must be a number, got ", it->dump()));
  return it->get<double>();
}

bool get_bool(const json& j, const std::string& file, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw ConfigError(cat(file, ": key '", key, "' must be true or false, got ", it->dump()));
  return it->get<bool>();
}

}  // namespace

const char* to_string(Family family) {
  switch (family) {
    case Family::qwen3: return "qwen3";
    case Family::qwen2: return "qwen2";
    case Family::llama: return "llama";
  }
  return "?";
}

Family parse_family(const std::string& model_type, const std::string& where) {
  if (model_type == "qwen3") return Family::qwen3;
  if (model_type == "qwen2") return Family::qwen2;
  if (model_type == "llama") return Family::llama;
  throw ConfigError(cat(where, ": model_type '", model_type,
                        "' is not supported (supported: qwen3, qwen2, llama)"));
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& file) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw ConfigError(cat(file, ": not valid JSON: ", e.what()));
  }
  if (!j.is_object()) throw ConfigError(cat(file, ": expected a JSON object"));
  ModelConfig c;
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string()) throw ConfigError(cat(file, ": missing required string key 'model_type'"));
  c.family = parse_family(mt->get<std::string>(), file);  // before anything else: refuse by name first
  c.shape = hf::parse_hf_config(json_text, file);            // sizes, heads, tie_word_embeddings
  const hf::ModelShape& s = c.shape;
  if (s.intermediate_size <= 0)
    throw ConfigError(cat(file, ": missing or non-positive key 'intermediate_size' (dense MLP width)"));
  if (s.head_dim % 2 != 0) throw ConfigError(cat(file, ": head_dim must be even for RoPE, got ", s.head_dim));

  if (auto act = j.find("hidden_act"); act != j.end() && act->is_string() && act->get<std::string>() != "silu")
    throw ConfigError(cat(file, ": hidden_act '", act->get<std::string>(), "' is not supported (only silu)"));
  if (get_bool(j, file, "mlp_bias", false)) throw ConfigError(cat(file, ": mlp_bias=true is not supported"));

  c.rms_norm_eps = get_num(j, file, "rms_norm_eps", 1e-6);
  if (!(c.rms_norm_eps > 0 && c.rms_norm_eps < 1))
    throw ConfigError(cat(file, ": rms_norm_eps must be in (0, 1), got ", c.rms_norm_eps));
  // The context length: the engine's max_model_len and the trainer's context check come from it
  // (every Qwen/Llama config.json has it; a default would guess a model's context).
  c.max_position_embeddings = get_int(j, file, "max_position_embeddings", true);
  if (c.max_position_embeddings < 1 || c.max_position_embeddings > std::numeric_limits<int32_t>::max())
    throw ConfigError(cat(file, ": max_position_embeddings must be in [1, 2^31), got ", c.max_position_embeddings));
  // Qwen2's attention always has q/k/v bias (no key); Qwen3/Llama follow attention_bias, which
  // then also puts a bias on o_proj -- not supported.
  if (c.family == Family::qwen2) {
    c.qkv_bias = true;
  } else if (get_bool(j, file, "attention_bias", false)) {
    throw ConfigError(cat(file, ": attention_bias=true is not supported for ", s.model_type));
  }
  c.qk_norm = c.family == Family::qwen3;
  // Qwen2/Qwen3 configs can switch some layers to sliding-window attention; fp8rl only has
  // full causal attention, so refuse rather than silently attend further than the model was trained to.
  if (get_bool(j, file, "use_sliding_window", false))
    throw ConfigError(cat(file, ": use_sliding_window=true is not supported"));

  // RoPE: transformers 5 "rope_parameters" {rope_type, rope_theta, ...}; 4.x "rope_theta" and
  // "rope_scaling" {rope_type|type, ...} (null for none).
  const json* rope = nullptr;
  std::string rope_key;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_object()) {
      rope = &*it;
      rope_key = key;
      break;
    }
  }
  c.rope_theta = get_num(j, file, "rope_theta", 10000.0);
  if (rope) {
    const std::string where = file + " " + rope_key;
    c.rope_theta = get_num(*rope, where, "rope_theta", c.rope_theta);
    std::string type = "default";
    for (const char* key : {"rope_type", "type"}) {
      if (auto it = rope->find(key); it != rope->end() && it->is_string()) {
        type = it->get<std::string>();
        break;
      }
    }
    if (type == "llama3") {
      RopeScaling& r = c.rope_scaling;
      r.type = type;
      r.factor = get_num(*rope, where, "factor", 0.0);
      r.low_freq_factor = get_num(*rope, where, "low_freq_factor", 0.0);
      r.high_freq_factor = get_num(*rope, where, "high_freq_factor", 0.0);
      r.original_max_position_embeddings = get_int(*rope, where, "original_max_position_embeddings", true);
      if (r.factor <= 0 || r.low_freq_factor <= 0 || r.high_freq_factor <= r.low_freq_factor ||
          r.original_max_position_embeddings <= 0)
        throw ConfigError(cat(where, ": llama3 rope needs factor > 0, 0 < low_freq_factor < high_freq_factor "
                              "and original_max_position_embeddings > 0"));
    } else if (type != "default") {
      throw ConfigError(cat(where, ": rope type '", type, "' is not supported (supported: default, llama3)"));
    }
  }
  if (c.rope_theta <= 0) throw ConfigError(cat(file, ": rope_theta must be > 0"));
  return c;
}

ModelConfig read_model_config(const std::string& model_dir) {
  const std::string file = (std::filesystem::path(model_dir) / "config.json").string();
  std::ifstream in(file);
  if (!in) throw ConfigError(cat(file, ": cannot open (is this an HF checkpoint directory?)"));
  std::stringstream text;
  text << in.rdbuf();
  return parse_model_config(text.str(), file);
}

ModelConfig default_model_config(Family family, const hf::ModelShape& shape) {
  ModelConfig c;
  c.family = family;
  c.shape = shape;
  c.shape.model_type = to_string(family);
  if (c.shape.head_dim == 0 && c.shape.num_attention_heads > 0)
    c.shape.head_dim = c.shape.hidden_size / c.shape.num_attention_heads;
  c.shape.num_experts = 0;
  c.shape.moe_intermediate_size = 0;
  switch (family) {
    case Family::qwen3:
      c.rope_theta = 1000000.0;
      c.rms_norm_eps = 1e-6;
      c.max_position_embeddings = 40960;
      c.qk_norm = true;
      break;
    case Family::qwen2:
      c.rope_theta = 1000000.0;
      c.rms_norm_eps = 1e-6;
      c.max_position_embeddings = 32768;
      c.qkv_bias = true;
      break;
    case Family::llama:  // Llama 3.2's config.json
      c.rope_theta = 500000.0;
      c.rms_norm_eps = 1e-5;
      c.max_position_embeddings = 131072;
      c.rope_scaling = RopeScaling{"llama3", 32.0, 1.0, 4.0, 8192};
      break;
  }
  return c;
}

std::string model_config_to_json(const ModelConfig& c) {
  const hf::ModelShape& s = c.shape;
  const char* arch = c.family == Family::qwen3 ? "Qwen3ForCausalLM"
                     : c.family == Family::qwen2 ? "Qwen2ForCausalLM"
                                                 : "LlamaForCausalLM";
  json j = {
      {"architectures", {arch}},
      {"model_type", to_string(c.family)},
      {"vocab_size", s.vocab_size},
      {"hidden_size", s.hidden_size},
      {"intermediate_size", s.intermediate_size},
      {"num_hidden_layers", s.num_hidden_layers},
      {"num_attention_heads", s.num_attention_heads},
      {"num_key_value_heads", s.num_key_value_heads},
      {"head_dim", s.head_dim},
      {"hidden_act", "silu"},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"tie_word_embeddings", s.tie_word_embeddings},
      {"initializer_range", 0.02},
      {"torch_dtype", "bfloat16"},
  };
  if (c.family != Family::qwen2) j["attention_bias"] = false;
  if (c.rope_scaling.type == "llama3") {
    const RopeScaling& r = c.rope_scaling;
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", r.factor},
                         {"low_freq_factor", r.low_freq_factor},
                         {"high_freq_factor", r.high_freq_factor},
                         {"original_max_position_embeddings", r.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  return j.dump(2) + "\n";
}

}  // namespace fp8rl::model
