// The decoder-only causal LM of the Qwen3 / Qwen2 / Llama 3 families: one definition for the
// trainer (whole sequences, autograd) and the rollout engine (paged KV through its own Attention).
//
//   embed -> L x [ x += o(attn(rope(qk_norm?(q(n1(x)), k(n1(x)))), v(n1(x)))) ;
//                  x += mlp(n2(x)) ] -> final norm -> lm_head
//
// The primary call is packed: forward(ids [N], positions [N], ctx) runs the new tokens of many
// sequences concatenated, and the per-call AttentionContext (core/model/attention.h) says where
// the sequences start and which Attention runs. Only attention looks at the context; norms, RoPE,
// projections and the MLP are token-wise. The stages are public (embed, rope, decoder_layer,
// final_norm, lm_head) so the trainer can checkpoint activations per layer and the engine can
// capture its decode steps. The padded [B, T] calls (hidden_states, logits) are thin wrappers
// that pack the real tokens, for tests and HF parity.
//
// DESIGN.md asks for one file per architecture family; Qwen3, Qwen2/2.5 and Llama 3.x are one
// architecture with three switches, so they share this file and their differences are data, not
// code paths (architecture.cpp's table says which tensors each has). A family with a different
// block (Qwen3-MoE: routed experts) gets its own MlpBlock file. The switches: q/k/v bias (qwen2),
// q_norm/k_norm on head_dim before RoPE (qwen3), llama3 RoPE scaling (llama), tied or untied
// lm_head. The projections are Linear objects made by a LinearFactory (q/k/v and gate/up fused
// where the factory allows) and the MLP is an MlpBlock, so FP8, LoRA and MoE slot in from outside
// (core/model/layers.h). The decoder reads dense tensors only; how quantized weights are stored
// is the factory's business (quant/fp8_model.h).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "core/model/attention.h"
#include "core/model/layers.h"
#include "core/model/model_config.h"

namespace fp8rl::safetensors {
class Checkpoint;
}

namespace fp8rl::model {

struct LoadOptions {
  at::ScalarType dtype = at::kBFloat16;        // model dtype: kBFloat16 or kFloat (kHalf accepted)
  at::Device device = at::kCPU;
  bool requires_grad = false;                  // mark every dense tensor as trainable
  LinearFactory linear = dense_linear_factory();
  // Which q/k/v and gate/up groups run fused (architecture.h). Dense weights always can.
  FusePolicy fuse = [](const ProjectionGroup&, const WeightReader&) { return true; };
  MlpFactory mlp = gated_mlp_factory();
  // Checkpoint tensors the factory reads besides `<module>.weight` / `.bias` (quant/: FP8 block
  // scales, ".weight_scale_inv"): not reported as unused.
  std::vector<std::string> factory_tensor_suffixes;
};

// Optional inputs of a padded [B, T] forward call. Left padding: attention_mask [B, T] (1 = token,
// 0 = pad) keeps pads out of the batch (only real tokens are packed and attended over; pad rows
// of the output are zero); positions [B, T] int64 then usually counts from the first real token
// (cumsum(mask) - 1). Both default to plain causal attention at positions 0..T-1.
struct ForwardOptions {
  at::Tensor attention_mask;       // [B, T] int/bool, or undefined
  at::Tensor positions;            // [B, T] int64, or undefined
  Attention* attention = nullptr;  // whole-sequence attention to use; default: VarlenAttention
};

// cos, sin of the rotary embedding at a call's positions, shared by every layer of that call.
struct Rope {
  at::Tensor cos, sin;  // [N, head_dim] in the model dtype
};

struct DecoderLayer {
  at::Tensor input_layernorm;           // [H]
  Projection qkv;                       // H -> Hq*D + 2*Hkv*D: q, k, v (architecture.h: fused or parts)
  Projection o;                         // Hq*D -> H
  at::Tensor q_norm, k_norm;            // [D] (qwen3) or undefined
  at::Tensor post_attention_layernorm;  // [H]
  std::unique_ptr<MlpBlock> mlp;
};

class CausalLM {
 public:
  // Reads `<model_dir>/config.json` and the safetensors weights (single file or sharded), converts
  // BF16/FP16/FP32 to options.dtype on options.device. Throws ConfigError naming the file and the
  // tensor for an unsupported model_type, a missing tensor, a wrong shape or dtype.
  static CausalLM load(const std::string& model_dir, const LoadOptions& options = {});
  // Same, from an already opened checkpoint and a parsed config.
  static CausalLM load(const ModelConfig& config, const safetensors::Checkpoint& checkpoint,
                       const LoadOptions& options = {});

  CausalLM(CausalLM&&) noexcept;
  CausalLM& operator=(CausalLM&&) noexcept;
  ~CausalLM();

  // The packed forward: ids [N] int64 and positions [N] int64 of the new tokens of
  // ctx.num_sequences() sequences back to back -> final-norm output [N, H] in the model dtype (for
  // chunked log-probs against lm_head_weight(), or lm_head()). ctx.attention must be set.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions, const AttentionContext& ctx) const;

  // The stages of forward(), in order:
  at::Tensor embed(const at::Tensor& ids) const;            // ids [N] -> [N, H]
  Rope rope(const at::Tensor& positions) const;              // positions [N] -> cos, sin [N, D]
  // One decoder layer: x [N, H] -> [N, H] (both residual adds included).
  at::Tensor decoder_layer(int64_t index, const at::Tensor& x, const Rope& rope, const AttentionContext& ctx) const;
  at::Tensor final_norm(const at::Tensor& x) const;          // [N, H] -> [N, H]
  at::Tensor lm_head(const at::Tensor& hidden) const;        // [..., H] -> logits [..., V]
  // The same into `out` [N, V] (hidden [N, H]): the engine's CUDA graphs share one output buffer.
  void lm_head_into(const at::Tensor& hidden, at::Tensor& out) const;

  // Padded wrappers (tests, HF parity): input_ids [B, T] int64 -> final-norm output [B, T, H] /
  // logits [B, T, V] in the model dtype. The real tokens are packed and run through forward().
  at::Tensor hidden_states(const at::Tensor& input_ids, const ForwardOptions& options = {}) const;
  at::Tensor logits(const at::Tensor& input_ids, const ForwardOptions& options = {}) const;

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return embed_tokens_.device(); }
  const at::Tensor& embed_tokens() const { return embed_tokens_; }  // [V, H]
  // [V, H]: embed_tokens() when tied.
  const at::Tensor& lm_head_weight() const { return tied_ ? embed_tokens_ : lm_head_; }
  const std::vector<DecoderLayer>& layers() const { return layers_; }
  // Every tensor with its name and role (tensor_visitor.h), in model order: HF names, fused
  // projections under their fused name with their HF parts; the tied lm_head appears once, as
  // embed_tokens; RoPE's inv_freq as a buffer.
  void visit(const TensorVisitor& fn) const;
  std::vector<ModelTensor> tensors() const;  // visit() collected

  // Bumped by every update of the weights (optimizer step + sync, re-quantization, loading new
  // adapters); the rollout engine drops its cached prefixes when it moves.
  uint64_t weight_version() const { return weight_version_; }
  void bump_weight_version() { ++weight_version_; }

 private:
  CausalLM() = default;
  // The layer's input is x = h + delta (the previous layer's residual and MLP output, unsummed;
  // delta undefined: x = h), formed in input_layernorm's kernel where it can be and handed back
  // through x. Returns the attention's output [N, H] (o_proj applied).
  at::Tensor self_attention(const DecoderLayer& layer, int64_t index, const at::Tensor& h, const at::Tensor& delta,
                            at::Tensor& x, const Rope& rope, const AttentionContext& ctx) const;
  // decoder_layer of x = h + delta, its output left unsummed: {residual after attention, MLP
  // output}, so forward() can form the sum in the next norm's kernel (add_rms_norm).
  std::pair<at::Tensor, at::Tensor> decoder_layer_unsummed(int64_t index, const at::Tensor& h, const at::Tensor& delta,
                                                           const Rope& rope, const AttentionContext& ctx) const;

  ModelConfig config_;
  at::ScalarType dtype_ = at::kBFloat16;
  bool tied_ = false;
  at::Tensor embed_tokens_;  // [V, H]
  std::vector<DecoderLayer> layers_;
  at::Tensor norm_;          // [H]
  at::Tensor lm_head_;       // [V, H], undefined when tied
  at::Tensor inv_freq_;      // [D/2] float32
  // The padded wrappers' default attention (stateless; one per model keeps it out of globals).
  std::unique_ptr<VarlenAttention> default_attention_;
  uint64_t weight_version_ = 0;
};

}  // namespace fp8rl::model
