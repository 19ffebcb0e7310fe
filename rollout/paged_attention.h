// The engine's Attention: each call first writes its new tokens' K/V into the KV cache
// (ctx.slot_mapping), then attends every new query over its sequence's cached keys -- the
// scheduler's contract (rollout/scheduler.h): all of a call's K/V is written before any query
// reads the cache, layer by layer, so a prefix block filled and shared in the same step is read
// correctly.
//
// Two paths:
//   - decode kernel (CUDA, bf16/fp16 with a cache of that dtype or FP8, head_dim 16..256,
//     Hq/Hkv <= 8; decode_kernel_applies):
//     when every sequence of the call has exactly one new token (a decode step: N == S), the
//     queries read the cache in place through ctx.block_tables and ctx.context_lens
//     (rollout/cuda/paged_decode.cu). No host data, no gather, fixed launch shape per batch size:
//     what a CUDA graph of a decode step needs (rollout/decode_graphs.h). With ctx.shared_prefix
//     (EngineConfig::shared_prefix_decode) the samples of a prompt read its keys together.
//   - reference (everything else: prefill, the CPU, fp32): the keys are gathered
//     from the cache (ctx.key_slots) into a packed [sum context_lens, Hkv, D] and handed to
//     whole-sequence attention with queries aligned bottom-right (core/model/attention.h):
//     FlashInfer's sm90 prefill kernel on Hopper in bf16 (head_dim 128), flash-attention varlen
//     on other CUDA inputs, per-sequence SDPA on the CPU. The decode kernel is tested against it.
//     When no sequence has a cached prefix and the cache holds the model's dtype, the gather
//     would return the call's own k/v bit for bit, so they go to attention directly.
// A mixed step (ctx.split: sequences with one new token beside sequences with several, as when
// sequences are admitted while others decode) runs each part on its path: the one-token rows on
// the decode kernel, the others over their own gathered keys, outputs scattered back to their
// rows. Without the split every decoding sequence's whole context would be gathered, per layer.
// Inference only: the engine runs under at::InferenceMode.
#pragma once

#include "core/model/attention.h"
#include "rollout/kv_cache.h"

namespace fp8rl::rollout {

class PagedAttention final : public model::Attention {
 public:
  // `use_decode_kernel` = false keeps every call on the reference path (tests, comparisons).
  explicit PagedAttention(KvCache& cache, bool use_decode_kernel = true)
      : cache_(&cache), use_decode_kernel_(use_decode_kernel) {}
  // Attend over another cache from now on (the engine's next rollout; its CUDA graphs reach the
  // cache through its KvDirectory, so they need nothing else).
  void bind(KvCache& cache) { cache_ = &cache; }
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const model::AttentionContext& ctx,
                     int64_t layer) override;
  // With fused_kv_store(): q/k norm, RoPE and the K/V write into the cache in one kernel
  // (model::qk_norm_rope_store), then attention as forward() attends; where that kernel does not
  // apply (the CPU, an FP8 layer's first write, which sets its scales), the rotation, then forward().
  at::Tensor forward_rotating(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const model::QkRotation& rotation, const model::AttentionContext& ctx,
                              int64_t layer) override;

  // Layer calls whose K/V the rotation kernel stored (forward_rotating's fused path), since this
  // attention was made: eager calls and graph captures (a replay repeats its capture's path).
  int64_t fused_stores() const { return fused_stores_; }

  // Whether decode steps of this model and cache run the kernel (then the engine needs no
  // key_slots for them).
  bool decode_kernel_applies(at::ScalarType q_dtype, int64_t num_q_heads) const;

 private:
  // Whether attend() takes the decode kernel for q under ctx (it then reads only the cache).
  bool runs_decode_kernel(const at::Tensor& q, const model::AttentionContext& ctx, int64_t layer) const;
  // forward() after the write: one path for the call, or a mixed step's two parts.
  at::Tensor attend_written(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const model::AttentionContext& ctx, int64_t layer);
  // Attention of q over the cache, the call's K/V already written; one of the two paths (k and v
  // may be undefined where runs_decode_kernel).
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const model::AttentionContext& ctx,
                    int64_t layer);

  KvCache* cache_;  // not owned
  bool use_decode_kernel_;
  int64_t fused_stores_ = 0;
  model::VarlenAttention varlen_{/*inference_kernel=*/true};  // Hopper prefill kernel where it applies
};

// The decode kernel on its own: q [B, Hq, D] over the cached keys of `k_cache`/`v_cache`
// [slots, Hkv, D] through block_tables [B, W] int32 and context_lens [B] int32 -> [B, Hq, D].
// A kByte cache holds E4M3 bytes, dequantized with k_scale / v_scale (float32 [1] on the device;
// rollout/kv_cache.h). `shared_prefix` ([B, M + 2] int32 on the device, rollout/shared_prefix.h,
// M * Hq / Hkv <= 16) reads each chunk's shared keys once for all its members; the same attention
// (up to the order of the additions). `cache_bases` (KvCache::bases: device {K, V} addresses
// of these caches) makes the kernel read the caches' addresses there, as a CUDA graph that
// outlives the cache must. CUDA only (throws elsewhere).
at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& context_lens, int64_t block_size,
                                  const at::Tensor& k_scale = {}, const at::Tensor& v_scale = {},
                                  const at::Tensor& shared_prefix = {}, void* const* cache_bases = nullptr);
bool paged_decode_supported(at::ScalarType q_dtype, at::Device device, int64_t num_q_heads, const at::Tensor& k_cache);
// With an FP8 cache, whether the decode kernel runs its MMAs (K Q^T and P V) in fp16, the E4M3
// bytes widened by one conversion per pair and V's read a word per key row
// (rollout/cuda/paged_decode.cu), rather than in q's dtype with each byte widened through float.
// On by default (FP8 + FP8 KV decode at batch 64: graph step 6.26 -> 6.13 ms, Qwen3-8B shape,
// H100); FP8RL_FP8_KV_HALF_MMA=0 turns it off, read once. Tests set both. Read per
// call, so a captured CUDA graph keeps the value it was captured with.
bool fp8_kv_half_mma();
void set_fp8_kv_half_mma(bool on);
// With an FP8 cache, whether the decode kernel's split-K count rounds down (the fewest splits
// that keep ~4 blocks per multiprocessor; rollout/cuda/rollout_kernels.h) rather than up as for
// a bf16 cache: the kernel alone on an H100 took 18.4 us instead of 22.0 at batch 16 and 42.2
// instead of 47.6 at batch 64 per layer (Qwen3-8B shape), and a single split needs no merge; in
// the engine 1.01x tokens/s at batch 16, 1.03x at 32, 1.05x at 64 (FP8 + FP8 KV, H100). On by
// default; FP8RL_FP8_KV_FEWER_SPLITS=0 restores the bf16 rule, read once. Read per call, so a
// captured CUDA graph keeps the split count it was captured with.
bool fp8_kv_fewer_splits();
void set_fp8_kv_fewer_splits(bool on);
// With an FP8 cache and head_dim 128, how many K/V tiles the decode kernel's blocks hold in shared
// memory: two (one tile in flight ahead of the one computed, 5 blocks per multiprocessor) or
// three (two in flight; rows XOR-swizzled instead of padded, so 4 blocks still fit). Measured on
// an H100 (Qwen3-8B shape), three stages pay where a batch's blocks, one split each, fill the GPU
// in one wave of 4 per multiprocessor (batch 64: the kernel alone 43.4 vs 46.8 us, the engine's
// graph step 5.58 vs 5.76 ms), and lose where blocks are short (batch 16 at 4 splits: 19.1 vs
// 17.7 us) or come in several waves (batch 128-256: graph step 0.7-1.3% slower). Since the
// kernel's copy addresses were cut (rollout/fast_divmod.h), three stages time alone at batch
// 128-256 from even to 2.1% faster (three H100s), and since the block table is read a tile ahead
// 1-3% faster at batch 128-256 and even at batch 16 with 4 splits (one H100); in the engine, three
// stages everywhere against this rule measured 1.012x at batch 16, 1.000x at 128 and 1.003x at 256
// (H100, fifteenth session): within noise, so the rule stays.
//   two: always two; by_shape (the default): three where fp8_kv_three_stages_by_shape says;
//   three: always three. FP8RL_FP8_KV_THREE_STAGES=0 gives two, 1 by_shape, 2 three, read once
//   (set_fp8_kv_stages overrides it).
// Read per call, so a captured CUDA graph keeps the choice it was captured with. The first pass's
// shape decides for the shared-prefix pass too (one flag per launch pair; either depth is correct).
enum class Fp8KvStages { two, by_shape, three };
Fp8KvStages fp8_kv_stages();
void set_fp8_kv_stages(Fp8KvStages stages);
// The by_shape rule: one split, and at most 4 blocks (batch x num_kv_heads) per multiprocessor.
bool fp8_kv_three_stages_by_shape(int64_t batch, int64_t num_kv_heads, int64_t splits, int sm_count);
// Whether PagedAttention::forward_rotating stores K/V from the q/k norm + RoPE kernel rather than
// by a write kernel of its own (one launch fewer per layer, two with an FP8 cache; the same
// bytes). On by default (1.01-1.02x decode tokens/s, Qwen3-8B shape, H100); FP8RL_FUSED_KV_STORE=0
// turns it off, read once. Tests set both. A
// captured CUDA graph keeps the value it was captured with.
bool fused_kv_store();
void set_fused_kv_store(bool on);
// Whether paged_decode_attention runs the shared-prefix pass for a decode step of `batch`
// sequences with chunks of `members`: not when the batch's own split-K already takes all 64
// partial states the merge combines (the smallest batches, which also share least), and never
// without CUDA. Callers build the chunk table only when it does.
bool shared_prefix_pass_runs(int64_t batch, int64_t num_kv_heads, int32_t members);
// The current GPU's L2 cache in bytes (0 without CUDA): what shared-prefix decode's size rule
// (rollout/shared_prefix.h, shared_prefix_pays) weighs a rollout's shared prompts against.
int64_t l2_cache_bytes();

}  // namespace fp8rl::rollout
