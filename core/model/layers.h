// The building blocks of a decoder, written with ATen ops (autograd-friendly, CPU and CUDA):
// RMSNorm, RoPE, and the pluggable pieces -- Linear (made by a LinearFactory), MlpBlock -- that
// an FP8 linear, a LoRA linear or a mixture-of-experts block replace without touching the decoder
// (core/model/decoder.h). Attention, the third seam, is chosen per call (core/model/attention.h).
//
// Layout: packed tokens. Activations are [N, H] (the new tokens of many sequences back to back,
// core/model/attention.h); heads are [N, heads, head_dim]. Everything here is token-wise, so it
// also takes any leading shape [..., H].
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "core/model/architecture.h"
#include "core/model/model_config.h"
#include "core/model/tensor_visitor.h"
#include "core/model/weight_reader.h"

namespace fp8rl::model {

// y = x @ W.T (+ b). x [..., in] -> [..., out].
class Linear {
 public:
  virtual ~Linear() = default;
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // forward(rms_norm(x, norm_weight, eps)) and forward(silu_mul(gate_up)): the decoder asks for
  // its projections' inputs this way so that a linear which quantizes its input may make it in
  // one kernel with the op before (quant/fp8_model.h); by default the two run in turn.
  virtual at::Tensor forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps);
  virtual at::Tensor forward_silu_mul(const at::Tensor& gate_up);
  // forward_rms_normed(x + residual, ...), with x + residual (the residual stream's next value)
  // handed back through `sum`: the add may join the norm's kernel (add_rms_norm), and an FP8
  // linear's quantization too. By default add_rms_norm, then forward.
  virtual at::Tensor forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual,
                                            const at::Tensor& norm_weight, double eps, at::Tensor& sum);
  // Calls `fn` for each tensor, named `module` + "." + its local name ("weight", "bias",
  // "lora_A.weight", ...). The caller fills in ModelTensor::projection.
  virtual void visit(const std::string& module, const TensorVisitor& fn) const = 0;
};

// The plain BF16/FP32 linear: at::linear(x, weight [out, in], bias [out] or undefined).
class DenseLinear final : public Linear {
 public:
  DenseLinear(at::Tensor weight, at::Tensor bias);
  at::Tensor forward(const at::Tensor& x) override;
  void visit(const std::string& module, const TensorVisitor& fn) const override;
  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }

 private:
  at::Tensor weight_;  // [out, in]
  at::Tensor bias_;    // [out] or undefined
};

// Builds the Linear of one projection (architecture.h: a single HF module, or a fused group whose
// parts are concatenated along N) from the checkpoint, through `reader`. The spec's HF part
// names let a factory pick per module (BF16 first/last layers, LoRA targets, ...).
using LinearFactory = std::function<std::unique_ptr<Linear>(const ProjectionSpec& spec, const WeightReader& reader)>;
// Whether the parts of one group (e.g. q/k/v of a layer) may run as one fused projection. Asked
// once per group of several parts, before the factory is called.
using FusePolicy = std::function<bool(const ProjectionGroup& group, const WeightReader& reader)>;

// Dense weights: the parts' weights (and biases) read in the model dtype and concatenated along
// N; marked trainable when the reader says so.
LinearFactory dense_linear_factory();
// [weight [out, in], bias [out] or undefined] of a dense projection, parts concatenated.
std::pair<at::Tensor, at::Tensor> read_dense_projection(const ProjectionSpec& spec, const WeightReader& reader);

// One slot of a decoder layer (qkv, o, gate_up, down): a single fused projection, or -- when the
// factory would not fuse -- its parts run one by one and concatenated. Either way
// forward gives x [N, K] -> [N, sum of part outputs].
struct Projection {
  std::vector<ProjectionSpec> specs;             // one (fused or single module) or several (unfused parts)
  std::vector<std::unique_ptr<Linear>> linears;  // one per spec
  at::Tensor forward(const at::Tensor& x) const;
  // Linear's fused-input forwards for a single linear; unfused parts share one normed (or
  // SiLU-gated) input, computed once.
  at::Tensor forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps) const;
  at::Tensor forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& norm_weight,
                                    double eps, at::Tensor& sum) const;
  at::Tensor forward_silu_mul(const at::Tensor& gate_up) const;
  void visit(const TensorVisitor& fn) const;      // each linear's tensors under its spec's name
  int64_t out_features() const;
};

// Builds a slot from its group: fused when `fuse` allows (and the group has several parts).
Projection make_projection(const ProjectionGroup& group, const LinearFactory& factory, const FusePolicy& fuse,
                           const WeightReader& reader);

// The feed-forward half of a decoder layer: [N, H] -> [N, H]. A dense SiLU-gated MLP now, a
// routed mixture of experts later.
class MlpBlock {
 public:
  virtual ~MlpBlock() = default;
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // forward(rms_norm(x, norm_weight, eps)), the norm possibly fused into the first projection.
  virtual at::Tensor forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps);
  // forward(rms_norm(x + residual, ...)) with the sum handed back (Linear::forward_add_rms_normed).
  virtual at::Tensor forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual,
                                            const at::Tensor& norm_weight, double eps, at::Tensor& sum);
  virtual void visit(const TensorVisitor& fn) const = 0;
};

// down(silu(gate(x)) * up(x)), with gate and up as one projection [N, 2I] (gate first).
class GatedMlp final : public MlpBlock {
 public:
  GatedMlp(Projection gate_up, Projection down);
  const Projection& gate_up() const { return gate_up_; }
  const Projection& down() const { return down_; }
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps) override;
  at::Tensor forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& norm_weight,
                                    double eps, at::Tensor& sum) override;
  void visit(const TensorVisitor& fn) const override;

 private:
  Projection gate_up_, down_;
};

// Builds the MLP of one decoder layer from its projections (architecture.h). The dense families
// use gated_mlp_factory(); a routed mixture of experts is a new MlpBlock with its own factory
// (and its expert tensors in the architecture table), not an edit of the decoder.
using MlpFactory = std::function<std::unique_ptr<MlpBlock>(const LayerProjections& projections,
                                                           const LinearFactory& linear, const FusePolicy& fuse,
                                                           const WeightReader& reader)>;
MlpFactory gated_mlp_factory();

// HF's RMSNorm: in float32, x * rsqrt(mean(x^2) + eps), cast back to x's dtype, times weight.
// x [..., N], weight [N]. Under InferenceMode on CUDA (bf16/fp16) one fused kernel
// (core/model/cuda/fused_inference.h; same math, the mean summed in another order), else ATen ops.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// {x + y, rms_norm(x + y, weight, eps)}: the residual stream's next value and its norm (a decoder
// layer's attention residual and the MLP's input norm). Under InferenceMode on CUDA (bf16/fp16
// rows of more than 1024 elements, 2-D) one kernel, bit for bit the add and then rms_norm's
// kernel; else those two steps. x, y [N, H].
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight,
                                               double eps);

// silu(gate) * up of a gate_up projection's output [..., 2I] (gate first) -> [..., I]. Under
// InferenceMode on CUDA (bf16/fp16, 2-D) one fused kernel, bit-exact with the ATen ops.
at::Tensor silu_mul(const at::Tensor& gate_up);

// inv_freq [head_dim / 2] float32 on `device`: 1 / theta^(2i / head_dim), computed in float32 as
// HF does, then rope_scaling applied (llama3: _compute_llama3_parameters).
at::Tensor rope_inv_freq(const ModelConfig& config, at::Device device);

// cos, sin [N, head_dim] in `dtype` for positions [N] int64 (HF's rotary embedding: freqs in
// float32, emb = cat(freqs, freqs)). Any leading shape works: positions [...] -> [..., head_dim].
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& positions,
                                               at::ScalarType dtype);

// x [N, heads, D] rotated with HF's rotate_half convention: x * cos + rotate_half(x) * sin,
// cos/sin [N, D] (broadcast over heads). Under InferenceMode on CUDA one fused kernel,
// bit-exact with the ATen ops it replaces.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// A decoder layer's queries and keys made ready for attention: apply_rope(rms_norm(x, w, eps))
// for q [N, Hq, D] with q_weight and k [N, Hkv, D] with k_weight (Qwen3's q_norm / k_norm; an
// undefined weight skips that norm). Under InferenceMode on CUDA (bf16/fp16, D % 8 == 0 and
// <= 256, 16-byte aligned rows) one kernel for both, bit-exact with the two fused kernels above:
// 4 launches -> 1 per layer.
std::pair<at::Tensor, at::Tensor> qk_norm_rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& q_weight,
                                               const at::Tensor& k_weight, double eps, const at::Tensor& cos,
                                               const at::Tensor& sin);

// Where qk_norm_rope_store also stores K and V: the rollout engine's paged KV cache
// (rollout/kv_cache.h). Token t's rows go to slot slots[t] of k_cache / v_cache [slots, Hkv, D]
// (contiguous, 16-byte aligned), in k's dtype, or, with k_scale / v_scale (float32 [1] on the
// device), as E4M3 bytes of x / scale saturated to +-448. cache_bases: device {K, V} addresses the
// kernel reads instead of the tensors' (a CUDA graph that outlives one cache).
struct KvStoreTarget {
  at::Tensor slots;  // [N] int64 on the device
  at::Tensor k_cache, v_cache;
  at::Tensor k_scale, v_scale;
  void* const* cache_bases = nullptr;
};

// qk_norm_rope(q, k, ...) in one kernel that also stores the rotated k and v [N, Hkv, D] into
// `store`: the cache then holds what the separate write of KvCache::write stores from them, bit
// for bit, one launch (two with an FP8 cache) fewer per layer. Under InferenceMode on CUDA where
// qk_norm_rope's kernel takes q and k, v is laid out as k and the cache as above; nullopt
// otherwise, with nothing launched and nothing stored.
std::optional<std::pair<at::Tensor, at::Tensor>> qk_norm_rope_store(const at::Tensor& q, const at::Tensor& k,
                                                                    const at::Tensor& v, const at::Tensor& q_weight,
                                                                    const at::Tensor& k_weight, double eps,
                                                                    const at::Tensor& cos, const at::Tensor& sin,
                                                                    const KvStoreTarget& store);

}  // namespace fp8rl::model
