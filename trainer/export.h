// Writing trained weights back out as Hugging Face files.
//
// save_dense_model: a dense in-memory model as an HF checkpoint directory (what `fp8rl sft`
// leaves for `fp8rl train` to start from).
//
// export_run (`fp8rl export RUN_OR_CKPT -o DIR`): a run's checkpoint as
//   DIR/                 config.json, tokenizer files, model.safetensors: the full model in the
//                        recipe's model.dtype, LoRA merged (W + alpha/r * B A into the BF16
//                        weights the FP8 base was quantized from) or, for full fine-tuning, the
//                        trained dense tensors and FP32 masters of the FP8 projections
//   DIR/adapter/         (LoRA) PEFT's adapter_model.safetensors + adapter_config.json
// The checkpoint is verified first; a run directory exports its newest good checkpoint.
// Not yet: an FP8 export with HF's quantization_config.
#pragma once

#include <string>

#include "core/model/decoder.h"

namespace fp8rl::trainer {

// `model` must be dense (no FP8 projections, no adapters). Written to a temporary directory beside
// `out_dir`, then renamed over it, so a crash leaves the old directory or the new one.
void save_dense_model(const model::CausalLM& model, const std::string& source_dir, const std::string& out_dir);

// Returns the checkpoint directory exported. ConfigError for a missing, damaged or foreign source.
std::string export_run(const std::string& source, const std::string& out_dir);

}  // namespace fp8rl::trainer
