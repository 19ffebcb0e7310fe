// The tensor visitor: how everything outside the model walks the model's tensors -- the optimizer
// (trainable ones), checkpoints, export (HF names and parts), weight sync, and the one-copy test
// (FP8 data pointers). Each tensor comes with its full name and a role, instead of a flat
// parameters() list that cannot tell an FP8 weight from a trainable one.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <ostream>
#include <string>

namespace fp8rl::model {

struct ProjectionSpec;

enum class TensorRole {
  trainable,  // dense tensor with requires_grad: the optimizer updates it
  frozen,     // dense tensor without requires_grad (a LoRA base, an inference load)
  fp8_data,   // FP8 weight bytes [Np, Kp] (quant/): frozen; full fine-tuning re-quantizes in place
  fp8_scale,  // its FP32 scales
  buffer,     // derived state, never saved (RoPE inverse frequencies)
};
const char* to_string(TensorRole role);
inline std::ostream& operator<<(std::ostream& os, TensorRole role) { return os << to_string(role); }

struct ModelTensor {
  // Full name. HF's for everything but fused projections, which are named as the model runs
  // them ("model.layers.0.self_attn.qkv_proj.weight"); `projection->parts` then lists the HF
  // modules packed along dim 0, in order, with their sizes (part_out).
  std::string name;
  at::Tensor tensor;
  TensorRole role = TensorRole::frozen;
  const ProjectionSpec* projection = nullptr;  // set for the tensors of a linear projection
};

using TensorVisitor = std::function<void(const ModelTensor&)>;

// trainable or frozen, by requires_grad.
inline TensorRole dense_role(const at::Tensor& t) {
  return t.requires_grad() ? TensorRole::trainable : TensorRole::frozen;
}

// A dense tensor under HF names: fn(name, tensor) once, or -- for a fused projection's weight or
// bias -- once per HF part, as views along dim 0 (weight [part_out, K], bias [part_out]). FP8
// data is padded per block and is split by quant/'s exporter instead (FP8RL_CHECK).
void for_each_hf_tensor(const ModelTensor& t, const std::function<void(const std::string&, const at::Tensor&)>& fn);

}  // namespace fp8rl::model
