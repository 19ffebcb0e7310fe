// Pre-quantized FP8 checkpoints in Hugging Face's format, read and written.
//
// config.json carries
//   "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
//                           "weight_block_size": [128, 128], "modules_to_not_convert": [...]}
// and each quantized linear `<module>` stores
//   <module>.weight            F8_E4M3 [N, K]
//   <module>.weight_scale_inv  F32     [ceil(N/128), ceil(K/128)]   W ~= q * scale_inv per block
// which is exactly our block scaling (quant/scaling.h) without the padding.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/hf/safetensors.h"
#include "quant/scaling.h"

namespace fp8rl::quant {

struct HfFp8Config {
  std::string fmt = "e4m3";
  std::string activation_scheme = "dynamic";
  std::vector<int64_t> weight_block_size{128, 128};
  std::vector<std::string> modules_to_not_convert;
};

// The model's quantization_config, or nullopt when config.json has none. Throws ConfigError
// naming the file and key when it is an FP8 config fp8rl cannot run as is (not fp8, not e4m3,
// blocks other than [128, 128], static activations).
std::optional<HfFp8Config> read_hf_fp8_config(const std::string& model_dir);

// Sets `config` as the quantization_config of `<model_dir>/config.json` (which must exist; its
// other keys are kept), rewritten atomically: what read_hf_fp8_config reads back. The writers of
// FP8 checkpoints (export --fp8, init --fp8) share it, so the layout is spelled once.
void write_hf_fp8_config(const std::string& model_dir, const HfFp8Config& config);
// Removes config.json's quantization_config, if any: for a dense (BF16) model written beside a
// copy of an FP8 checkpoint's config.
void drop_hf_quantization_config(const std::string& model_dir);

// Loads `<module>.weight` and `<module>.weight_scale_inv` into our padded layout on `device`.
// Throws ConfigError naming the file and tensor on a missing tensor, a wrong dtype or a scale
// whose shape does not fit the weight.
Fp8Weight load_hf_fp8_weight(const safetensors::Checkpoint& ckpt, const std::string& module, at::Device device);

// `w` in HF's layout, unpadded, on the CPU: the weight (float8_e4m3fn [N, K]) and its
// weight_scale_inv (float32 [ceil(N/128), ceil(K/128)]). `w` must be E4M3 with 128x128 blocks.
std::pair<at::Tensor, at::Tensor> hf_fp8_pair(const Fp8Weight& w);

// The two tensors of `w` in HF's layout (unpadded, on the CPU), for safetensors::write_file.
// `storage` keeps the host copies alive until the write.
std::vector<safetensors::TensorToWrite> hf_fp8_tensors(const std::string& module, const Fp8Weight& w,
                                                       std::vector<at::Tensor>& storage);

}  // namespace fp8rl::quant
