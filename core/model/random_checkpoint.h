// Randomly initialised HF checkpoints (quickstart, tests, benchmarks): config.json, a BF16
// model.safetensors and byte-level tokenizer files (byte_tokenizer.h) that HF transformers and
// fp8rl both load. How each drawn tensor is stored is the caller's hook (StoreRandomTensor), so
// quant/ writes the same model with FP8 projections (quant/random_fp8_checkpoint.h) without this
// layer knowing FP8.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/hf/config.h"
#include "core/hf/safetensors.h"
#include "core/model/architecture.h"

namespace fp8rl::model {

// Stores one drawn tensor: `value` is its init, float32 [spec.shape] on the drawing device. Appends
// the file entries for it to `out`, keeping their bytes alive (on the host) in `storage` until
// the file is written. Called once per tensor, in file order, so only what is kept stays in memory.
using StoreRandomTensor = std::function<void(const TensorSpec& spec, const at::Tensor& value,
                                             std::vector<safetensors::TensorToWrite>& out,
                                             std::vector<at::Tensor>& storage)>;

// The default store: `value` as BF16 on the host, under spec.name.
void store_bf16(const TensorSpec& spec, const at::Tensor& value, std::vector<safetensors::TensorToWrite>& out,
                std::vector<at::Tensor>& storage);

// Writes `<out_dir>/config.json`, `<out_dir>/model.safetensors`, and tokenizer.json +
// tokenizer_config.json when vocab_size holds the byte tokenizer (created if needed) for
// `arch` ("qwen3" | "qwen2" | "llama"; else ConfigError) at `shape` (e.g. qwen3_preset("0.6b");
// shape.model_type is ignored). Init as HF's _init_weights: linear and embedding weights
// normal(0, 0.02), RMSNorm weights 1, biases 0; drawn in float32 one tensor at a time on `device`
// from a generator seeded with `seed` (same seed and device, same file): on the CPU ATen's CPU
// generator (mt19937), on CUDA a CUDA (Philox) generator, so the two devices draw different
// numbers for one seed. CUDA without a CUDA build or a visible GPU is a ConfigError. `store`
// decides how each tensor is written (default store_bf16). The config takes the family's HF
// defaults for RoPE and epsilon (default_model_config).
void write_random_checkpoint(const std::string& out_dir, const std::string& arch, const hf::ModelShape& shape,
                             uint64_t seed, at::Device device = at::kCPU, const StoreRandomTensor& store = store_bf16);

}  // namespace fp8rl::model
