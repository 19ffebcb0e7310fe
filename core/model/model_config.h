// Everything the forward needs from an HF config.json, beyond hf::ModelShape (core/hf/config.h):
// RoPE base and scaling, RMSNorm epsilon, and which family-specific tensors exist.
//
// Supported model_type values: "qwen3", "qwen2", "llama" (Llama 3.x with or without
// rope_type "llama3"). Anything else is refused by name with ConfigError, before any weight is
// read. transformers 5 writes RoPE settings as "rope_parameters" (with rope_theta inside),
// 4.x as "rope_theta" + "rope_scaling"; both are read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/hf/config.h"

namespace fp8rl::model {

enum class Family { qwen3, qwen2, llama };

const char* to_string(Family family);

// HF's rope_scaling / rope_parameters. type "default" leaves inv_freq as is; "llama3" applies
// _compute_llama3_parameters (transformers/modeling_rope_utils.py).
struct RopeScaling {
  std::string type = "default";              // default | llama3
  double factor = 1.0;                       // llama3: long-context stretch of the low frequencies
  double low_freq_factor = 1.0;              // llama3: wavelengths above orig/low_freq_factor are divided by factor
  double high_freq_factor = 4.0;             // llama3: wavelengths below orig/high_freq_factor are kept
  int64_t original_max_position_embeddings = 0;  // llama3: the pre-training context length
};

struct ModelConfig {
  Family family = Family::qwen3;
  hf::ModelShape shape;                  // sizes, tie_word_embeddings (model_type as in the file)
  double rope_theta = 10000.0;       // RoPE base
  RopeScaling rope_scaling;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool qkv_bias = false;             // q/k/v projections carry a bias (qwen2; attention_bias elsewhere)
  bool qk_norm = false;              // RMSNorm over head_dim on q and k before RoPE (qwen3)
};

// Parses `<model_dir>/config.json`. Throws ConfigError naming the file and key for a missing or
// mistyped key, an unsupported model_type, or an unsupported rope type.
ModelConfig read_model_config(const std::string& model_dir);
// Same, from JSON text; `file` is only used in messages.
ModelConfig parse_model_config(const std::string& json_text, const std::string& file);

// The config fp8rl writes for a random model of `family` at `shape` (HF defaults for the
// family's RoPE and epsilon: Qwen3 theta 1e6 / eps 1e-6, Qwen2 1e6 / 1e-6, Llama 3.2 500000 /
// 1e-5 with llama3 scaling factor 32).
ModelConfig default_model_config(Family family, const hf::ModelShape& shape);
// config.json text for `config`, in transformers 4.x spelling (rope_theta + rope_scaling), which
// transformers 5 also reads.
std::string model_config_to_json(const ModelConfig& config);

// "qwen3" | "qwen2" | "llama"; anything else throws ConfigError listing the supported ones.
Family parse_family(const std::string& model_type, const std::string& where);

}  // namespace fp8rl::model
