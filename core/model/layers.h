// The building blocks of a decoder, written with ATen ops (autograd-friendly, CPU and CUDA):
// RMSNorm, RoPE, and the pluggable pieces -- Linear, Attention, MlpBlock -- that an FP8 linear,
// a LoRA linear, a paged-KV attention or a mixture-of-experts block replace without touching
// the decoder (core/model/decoder.h).
//
// Layout: packed tokens. Activations are [N, H] (the new tokens of many sequences back to back,
// core/model/attention.h); heads are [N, heads, head_dim]. Everything here is token-wise, so it
// also takes any leading shape [..., H].
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "core/model/model_config.h"

namespace fp8rl::model {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// y = x @ W.T (+ b). x [..., in] -> [..., out].
class Linear {
 public:
  virtual ~Linear() = default;
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // Trainable tensors under HF names relative to the layer ("weight", "bias", "lora_A.weight"...).
  virtual NamedTensors parameters() const = 0;
};

// The plain BF16/FP32 linear: at::linear(x, weight [out, in], bias [out] or undefined).
class DenseLinear final : public Linear {
 public:
  DenseLinear(at::Tensor weight, at::Tensor bias);
  at::Tensor forward(const at::Tensor& x) override;
  NamedTensors parameters() const override;
  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }

 private:
  at::Tensor weight_;  // [out, in]
  at::Tensor bias_;    // [out] or undefined
};

// Builds the Linear for one projection from its loaded weights. `name` is the HF module name
// ("model.layers.3.self_attn.q_proj"), so a factory can pick per layer (BF16 first/last layers,
// LoRA on attention only, ...). weight [out, in] and bias ([out] or undefined) are already in
// the model dtype on the model device.
using LinearFactory =
    std::function<std::unique_ptr<Linear>(const std::string& name, at::Tensor weight, at::Tensor bias)>;
LinearFactory dense_linear_factory();

// The feed-forward half of a decoder layer: [N, H] -> [N, H]. A dense SiLU-gated MLP now,
// a routed mixture of experts later.
class MlpBlock {
 public:
  virtual ~MlpBlock() = default;
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  virtual NamedTensors parameters() const = 0;  // names relative to "mlp."
};

// down(silu(gate(x)) * up(x)).
class GatedMlp final : public MlpBlock {
 public:
  GatedMlp(std::unique_ptr<Linear> gate, std::unique_ptr<Linear> up, std::unique_ptr<Linear> down);
  const Linear& gate() const { return *gate_; }
  const Linear& up() const { return *up_; }
  const Linear& down() const { return *down_; }
  at::Tensor forward(const at::Tensor& x) override;
  NamedTensors parameters() const override;

 private:
  std::unique_ptr<Linear> gate_, up_, down_;
};

// HF's RMSNorm: in float32, x * rsqrt(mean(x^2) + eps), cast back to x's dtype, times weight.
// x [..., N], weight [N].
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// inv_freq [head_dim / 2] float32 on `device`: 1 / theta^(2i / head_dim), computed in float32 as
// HF does, then rope_scaling applied (llama3: _compute_llama3_parameters).
at::Tensor rope_inv_freq(const ModelConfig& config, at::Device device);

// cos, sin [N, head_dim] in `dtype` for positions [N] int64 (HF's rotary embedding: freqs in
// float32, emb = cat(freqs, freqs)). Any leading shape works: positions [...] -> [..., head_dim].
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& positions,
                                               at::ScalarType dtype);

// x [N, heads, D] rotated with HF's rotate_half convention: x * cos + rotate_half(x) * sin,
// cos/sin [N, D] (broadcast over heads).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace fp8rl::model
