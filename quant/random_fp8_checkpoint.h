// Randomly initialised checkpoints in Hugging Face's FP8 format (hf_fp8.h): the model
// core/model/random_checkpoint.h writes, with every decoder projection (q/k/v/o, gate/up/down)
// stored as F8_E4M3 `.weight` + F32 `.weight_scale_inv` (128x128 blocks, unpadded). For models
// whose BF16 file would not fit the disk (Qwen3-32B: 61 GiB in BF16, ~32 GiB so), trained with
// quantization.quant_method: fp8, which loads these weights as stored.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "core/hf/config.h"

namespace fp8rl::quant {

// As model::write_random_checkpoint (same draws, config.json, tokenizer files; same seed and
// device, same values before rounding: the dense file's BF16 and this file's FP8 round the same
// float32 draws), plus config.json's quantization_config (fp8, e4m3, dynamic activations,
// [128, 128] blocks, modules_to_not_convert ["lm_head"]). Embeddings, norms, biases and lm_head
// stay BF16. Each projection is quantized on `device` as it is drawn, and only its FP8 bytes and
// scales are kept on the host until the file is written: host memory is about the file's size.
// CPU and CUDA draw different numbers for one seed.
void write_random_fp8_checkpoint(const std::string& out_dir, const std::string& arch, const hf::ModelShape& shape,
                                 uint64_t seed, c10::Device device = c10::kCPU);

}  // namespace fp8rl::quant
