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
// `--fp8` writes the FP8 projections in HF's FP8 format instead (see export_run).
#pragma once

#include <string>

#include "core/model/decoder.h"

namespace fp8rl::trainer {

// `model` must be dense (no FP8 projections, no adapters). Written to a temporary directory beside
// `out_dir`, then renamed over it, so a crash leaves the old directory or the new one.
void save_dense_model(const model::CausalLM& model, const std::string& source_dir, const std::string& out_dir);

// Returns the checkpoint directory exported. ConfigError for a missing, damaged or foreign source.
// With `fp8`: the projections the run's precision plan puts in FP8 are written in HF's FP8
// format (quant/hf_fp8.h: E4M3 weight + 128x128 weight_scale_inv, quantization_config in
// config.json with the dense modules in modules_to_not_convert), which fp8rl, HF transformers
// and vLLM load as stored.
std::string export_run(const std::string& source, const std::string& out_dir, bool fp8 = false);

}  // namespace fp8rl::trainer
