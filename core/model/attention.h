// Attention over packed tokens, chosen per forward call.
//
// A forward runs the new tokens of S sequences concatenated: q [N, Hq, D], k/v [N, Hkv, D] with
// N = sum of the sequences' new-token counts and Hq % Hkv == 0 (GQA: KV head j serves query heads
// j*g .. j*g+g-1, g = Hq / Hkv). What attention needs to know about the batch travels in an
// AttentionContext made by the caller for that one call; nothing is held in a global, and the
// decoder never looks inside it. The trainer makes one for whole sequences (whole_sequences());
// the rollout engine makes its own with KV slots and block tables and its own Attention (paged
// KV). The same CausalLM serves both.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <ATen/ATen.h>

namespace fp8rl::model {

class Attention;
struct AttentionScratch;
struct SplitStep;

// One forward call's batch, as attention sees it. Sequence s owns queries
// [cu_seqlens_q[s], cu_seqlens_q[s+1]) of the packed tokens and attends causally over its keys
// [cu_seqlens_k[s], cu_seqlens_k[s+1]); when it has more keys than queries (a cached prefix) the
// queries are its LAST tokens (bottom-right causal alignment, as flash-attention and vLLM do).
struct AttentionContext {
  Attention* attention = nullptr;  // what runs (not owned; outlives the call)
  at::Tensor cu_seqlens_q;         // [S+1] int32 on the model device, cu_seqlens_q[0] = 0
  at::Tensor cu_seqlens_k;         // [S+1] int32 on the model device
  std::vector<int64_t> cu_seqlens_q_host;  // the same boundaries on the host (CPU paths loop on them)
  std::vector<int64_t> cu_seqlens_k_host;
  int64_t max_seqlen_q = 0;
  int64_t max_seqlen_k = 0;
  // Paged KV (the rollout engine's Attention; whole-sequence attention ignores them):
  at::Tensor slot_mapping;  // [N] int64: cache slot each new token's K/V is written to
  at::Tensor block_tables;  // [S, max_blocks] int32: the KV blocks of each sequence, in order
  at::Tensor context_lens;  // [S] int32: keys of each sequence after this call's tokens are added
  // [sum of context_lens] int64: the cache slot of every key of every sequence, sequence after
  // sequence (cu_seqlens_k order). For attention that gathers its keys from the cache (the
  // engine's reference path) instead of reading block tables in the kernel.
  at::Tensor key_slots;
  // [S, M + 2] int32, or undefined: which sequences of a decode step read their first keys
  // together (the engine's shared-prefix decode; rollout/shared_prefix.h has the layout).
  at::Tensor shared_prefix;
  // A mixed step split in two by its caller, or null (rollout/step_context.h): the sequences with
  // one new token and those with several, each described on its own, so attention can run each
  // part on its own path. The parts' contexts hold no slot_mapping: this context's call writes
  // all new K/V before either part reads.
  std::shared_ptr<const SplitStep> split;
  // Per-call state an Attention may build on the first layer and reuse on the others (a kernel's
  // work plan over these sequence boundaries); it lives as long as the context. Not part of the
  // batch's description, hence mutable.
  mutable std::shared_ptr<AttentionScratch> scratch;

  int64_t num_sequences() const { return static_cast<int64_t>(cu_seqlens_q_host.size()) - 1; }
  int64_t num_tokens() const { return cu_seqlens_q_host.empty() ? 0 : cu_seqlens_q_host.back(); }
};

// The two parts of a mixed step (AttentionContext::split): packed query rows of the whole call
// and the context of each part's sequences, in the call's sequence order.
struct SplitStep {
  at::Tensor single_rows;           // [Ns] int64: rows of the sequences with one new token
  at::Tensor multi_rows;            // [Nm] int64: rows of the sequences with several
  AttentionContext single, multi;   // those sequences alone
};

// The context of `lengths` whole sequences packed back to back (keys = queries), for `attention`
// on `device`. Lengths may be 0 (an empty sequence takes no tokens).
AttentionContext whole_sequences(std::span<const int64_t> lengths, at::Device device, Attention* attention);

// How a decoder layer makes its projected q and k ready for attention: qk_norm_rope
// (core/model/layers.h), Qwen3's per-head q_norm / k_norm, then RoPE.
struct QkRotation {
  at::Tensor q_weight, k_weight;  // [D] each, or undefined: no norm
  double eps = 0;
  at::Tensor cos, sin;            // [N, D]
};

// Attention over already-projected, already-rotated heads of packed tokens:
//   q [N, Hq, D], k/v [N, Hkv, D]  ->  [N, Hq, D] in q's dtype; scale D^-0.5.
// `layer` lets a KV-cache implementation find its cache; whole-sequence attention ignores it.
class Attention {
 public:
  virtual ~Attention() = default;
  virtual at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionContext& ctx, int64_t layer) = 0;
  // forward() of q and k after qk_norm_rope(q, k, rotation): what the decoder calls, with the
  // projections as they come, so that an attention which stores K/V may rotate and store them in
  // one kernel (the engine's PagedAttention). By default the rotation, then forward().
  virtual at::Tensor forward_rotating(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const QkRotation& rotation, const AttentionContext& ctx, int64_t layer);
};

// The trainer's attention over whole sequences (and the CPU/reference path of any packed batch
// whose keys are its own tokens). Differentiable.
//   CUDA, bf16/fp16, head_dim % 8 == 0 and <= 256: ATen's flash-attention varlen kernel on the
//     sequence boundaries: no padding, no [T, T] mask, GQA without repeating K/V heads.
//   otherwise (CPU, fp32): reference_varlen_attention, one SDPA call per sequence.
// With `inference_kernel` (the rollout engine's prefill), calls that need no gradient on a
// Hopper GPU, in bf16 with head_dim 128 and 16-byte aligned q/k/v, outside CUDA-graph capture,
// run FlashInfer's sm90 prefill kernel instead
// (core/model/cuda/hopper_prefill.h: TMA, warpgroup MMAs, warp specialization). The trainer keeps
// flash-attention 2 for every forward, so its old-log-prob recompute and its update run the
// same kernel. FP8RL_HOPPER_PREFILL=0 in the environment turns the Hopper kernel off (a
// before/after from one binary).
class VarlenAttention final : public Attention {
 public:
  explicit VarlenAttention(bool inference_kernel = false) : inference_kernel_(inference_kernel) {}
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionContext& ctx, int64_t layer) override;
  // Whether the flash varlen kernel takes these inputs (else the reference runs).
  static bool uses_flash(const at::Tensor& q);
  // Whether a call with these inputs runs the Hopper prefill kernel.
  bool uses_hopper(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const;
  // Whether this build has the Hopper prefill kernel (FlashInfer's headers at configure time).
  static bool hopper_kernel_built();

 private:
  bool inference_kernel_;
};

// The same attention, one sequence at a time through at::scaled_dot_product_attention (math or
// fused kernel as ATen picks), K/V heads repeated for GQA as HF's repeat_kv does. Bottom-right
// causal mask where a sequence has more keys than queries. The reference VarlenAttention's
// kernel is tested against.
at::Tensor reference_varlen_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const AttentionContext& ctx);

// What the padded [B, T] forward used to do: sequences padded to the longest one, a dense
// [S, 1, T, T] boolean mask, one SDPA call over [S, Hq, T, D] with repeated K/V heads. Kept as a
// second reference and as the "before" row of `fp8rl bench forward`: its memory grows with
// S * T^2 and the mask keeps batches off the flash kernel. Keys = queries only.
class PaddedMaskAttention final : public Attention {
 public:
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionContext& ctx, int64_t layer) override;
};

}  // namespace fp8rl::model
