// Writing a trained dense model back out as an HF checkpoint directory: config.json and the
// tokenizer files copied from the model it was loaded from, model.safetensors from the model's
// own tensors under HF names (fused projections split into their parts). What `fp8rl sft`
// leaves behind for `fp8rl train` to start from.
#pragma once

#include <string>

#include "core/model/decoder.h"

namespace fp8rl::trainer {

// `model` must be dense (no FP8 projections, no adapters). Written to a temporary directory beside
// `out_dir`, then renamed over it, so a crash leaves the old directory or the new one.
void save_dense_model(const model::CausalLM& model, const std::string& source_dir, const std::string& out_dir);

}  // namespace fp8rl::trainer
