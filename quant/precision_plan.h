// The precision plan: which modules of a model run in FP8 and which stay in BF16.
//
// Decided once from the model's shape and the recipe's quantization section, before any weight
// is loaded, and logged at start-up with parameters and bytes per precision. Rules:
//   - decoder linear layers (q/k/v/o, gate/up/down) are FP8, except
//     * the first num_first_layers_in_bf16 and the last num_last_layers_in_bf16 layers,
//     * modules whose name matches a glob in modules_in_bf16 (fnmatch, e.g. "*.mlp.down_proj");
//   - embeddings, norms and lm_head always stay BF16 (model.dtype);
//   - quant_method: none keeps everything in BF16 (the baseline).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/hf/config.h"
#include "core/recipe/recipe.h"

namespace fp8rl::quant {

enum class Precision { fp8, bf16 };

struct ModulePlan {
  std::string name;          // HF module name, e.g. "model.layers.3.mlp.down_proj"
  int64_t out_features = 0;  // N (weight [N, K])
  int64_t in_features = 0;   // K
  Precision precision = Precision::bf16;
  std::string reason;        // why BF16: "first layers", "modules_in_bf16: *.down_proj", ...
  int64_t params() const { return out_features * in_features; }
};

struct PrecisionPlan {
  std::vector<ModulePlan> linears;  // every decoder linear layer, in model order
  int64_t fp8_params = 0, bf16_linear_params = 0, other_bf16_params = 0;  // other: embeddings, norms, lm_head
  int64_t fp8_bytes = 0;    // FP8 data + FP32 scales
  int64_t bf16_bytes = 0;   // everything else at model.dtype (2 bytes for bf16, 4 for fp32)
  std::string dense_dtype = "BF16";  // what the non-FP8 parts are held in: "BF16" or "FP32" (model.dtype)
  std::string summary() const;  // a few lines for the start-up log
  const ModulePlan* find(const std::string& name) const;
};

// Throws ConfigError when a modules_in_bf16 pattern matches no module (a typo would otherwise
// silently quantize what the user meant to protect). `not_converted`: an FP8 checkpoint's
// quantization_config.modules_to_not_convert, kept dense whatever the recipe says, matched as
// transformers matches them (a module whose name contains the entry); entries that match no
// decoder linear (lm_head) are fine, those are dense anyway.
PrecisionPlan make_precision_plan(const hf::ModelShape& shape, const recipe::QuantizationConfig& q, const std::string& dtype,
                                  const std::vector<std::string>& not_converted = {});

}  // namespace fp8rl::quant
