// Launchers of the engine's CUDA kernels. Plain pointers, no ATen (the ATen side and the
// references they are tested against: rollout/paged_attention.h, rollout/sampler.h).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace fp8rl::cuda {

// ---- paged decode attention (paged_decode.cu) ---------------------------------------------------
// One query per sequence (a decode step) attends over the sequence's context_lens[b] cached keys,
// found through its block table: slot of key t = table[b][t / block_size] * block_size + t % block_size.
// Split-K ("flash decoding"): grid (B, Hkv, splits); each block takes the g = Hq / Hkv query heads
// of one KV head (GQA without repeating K/V) over one chunk of the context, with an online
// softmax; a second kernel merges the chunks when splits > 1.
struct PagedDecodeArgs {
  const void* q;             // [B, Hq, D] contiguous, bf16 or fp16 (`bf16` says which)
  const void* k_cache;       // [slots, Hkv, D] contiguous: q's dtype, or E4M3 bytes (fp8_kv)
  const void* v_cache;       // [slots, Hkv, D]
  bool fp8_kv;
  const float* k_scale;      // fp8_kv: [1] dequantization scales (rollout/kv_cache.h); else null
  const float* v_scale;
  const int32_t* block_tables;  // [B, table_stride]
  int64_t table_stride;
  const int32_t* context_lens;  // [B], each >= 1 (the decode token's own key is cached already)
  void* out;                 // [B, Hq, D], q's dtype
  float* part_acc;           // [B, Hq, splits + prefix_splits, D] scratch (when that is > 1)
  float* part_ml;            // [B, Hq, splits + prefix_splits, 2] scratch: running max (log2 units), sum
  int64_t batch, num_q_heads, num_kv_heads, head_dim, block_size, splits;
  float scale;               // softmax scale (D^-0.5)
  bool bf16;
  // Shared prefixes (rollout/shared_prefix.h), or null: the chunk table [batch, chunk_members + 2]
  // int32. Then each row's keys before its prefix_len are read by a second launch, a block per
  // (chunk, KV head, prefix split) serving all the chunk's members, into partial slots
  // [splits, splits + prefix_splits) of each row; chunk_members * (Hq / Hkv) <= 16.
  const int32_t* chunks = nullptr;
  int64_t chunk_members = 0;
  int64_t prefix_splits = 0;  // 0 without chunks; splits + prefix_splits <= 64
  // Or null: device [2] {K, V} cache addresses, read by the kernel instead of k_cache / v_cache,
  // so a CUDA graph that captured it reads whichever cache was bound there last
  // (rollout/kv_cache.h, KvDirectory).
  const void* const* cache_bases = nullptr;
  // An FP8 cache's MMAs (K Q^T, P V) in fp16, q converted once per block, V's bytes read a word
  // per key row (paged_decode.cu; FP8RL_FP8_KV_HALF_MMA, on by default); false: in q's
  // dtype, each cache byte widened through float.
  bool fp8_half_mma = false;
  // An FP8 cache with head_dim 128: three tile stages per block in flight instead of two, rows
  // XOR-swizzled instead of padded so that 4 blocks still fit a multiprocessor (paged_decode.cu,
  // Smem; FP8RL_FP8_KV_THREE_STAGES). No effect on other caches and head sizes.
  bool fp8_three_stages = false;
};

// Whether the kernel takes this shape: head_dim 16, 32, 64, 128 or 256; Hq / Hkv <= 8.
bool paged_decode_supports(int64_t head_dim, int64_t group);
// Splits for a batch: blocks to fill `sm_count` multiprocessors ~4 deep, 1..64: at least 4 per
// multiprocessor, or (round_down) as many as 4 without going over, the fewest splits. Depends on
// the shape only (not on context lengths), so a captured CUDA graph stays valid. Measured on an
// H100 (scripts/paged-decode-bench, Qwen3-8B shape, contexts ~640): with an FP8 cache, whose
// blocks fit 5 to a multiprocessor, fewer and longer blocks are faster (batch 16: 4 splits 18.4
// us, 5 splits 22.0; batch 64: 1 split 42.2 us, 2 splits 47.6); with a bf16 cache (3 blocks per
// multiprocessor) rounding up is (batch 64: 2 splits 78.6-79.3 us, 1 split 87.5).
int64_t paged_decode_splits(int64_t batch, int64_t num_kv_heads, int sm_count, bool round_down = false);
void paged_decode_attention(const PagedDecodeArgs& a, cudaStream_t stream);

// ---- FP8 KV cache writes (kv_write.cu) ------------------------------------------------------------
// cache[slots[t]][h][d] = e4m3(clamp(x[t][h][d] / *scale, -448, 448)) for the step's N tokens.
struct KvWriteArgs {
  const void* x;             // [N, Hkv, D], element (t, h, d) at t * stride_t + h * stride_h + d
  int dtype;                 // 0 float32, 1 bfloat16, 2 float16
  int64_t tokens, heads, dim, stride_t, stride_h;
  const int64_t* slots;      // [N]
  const float* scale;        // [1]
  uint8_t* cache;            // [slots, Hkv, D] E4M3 bytes
  uint8_t* const* cache_base = nullptr;  // or device [1]: the cache's address, read by the kernel (KvDirectory)
};
void kv_write_fp8(const KvWriteArgs& a, cudaStream_t stream);

// ---- FP8 KV cache reads for prefill (kv_write.cu) ----------------------------------------------
// out[t][i] = dtype(float(e4m3(cache[slots[t]][i])) * *scale) for i < row = Hkv * D: the gather and
// dequantization KvCache::gather did in four ATen kernels per tensor (index_select, to float,
// multiply, to the model's dtype), which were ~19% of an FP8-cache prefill at batch 256 (H200).
struct KvGatherArgs {
  const uint8_t* cache;      // [slots, Hkv, D] E4M3 bytes, contiguous, 8-byte aligned
  const int64_t* slots;      // [N]
  const float* scale;        // [1]
  void* out;                 // [N, Hkv, D] contiguous, 16-byte aligned; dtype 0 float32, 1 bfloat16, 2 float16
  int dtype;
  int64_t tokens, row;       // row = Hkv * D, a multiple of 8
};
void kv_gather_fp8(const KvGatherArgs& a, cudaStream_t stream);

// ---- KV cache writes in the model's dtype (kv_write.cu) -----------------------------------------
// k_cache[slots[t]][h] = k[t][h] and v_cache[slots[t]][h] = v[t][h] for the step's N tokens, K and
// V in one launch (ATen's index_copy_ took one each): a plain copy, elem_bytes per element.
struct KvCopyArgs {
  const void* k;             // [N, Hkv, D], element (t, h, d) at t * k_stride_t + h * k_stride_h + d
  const void* v;
  int64_t tokens, heads, dim, k_stride_t, k_stride_h, v_stride_t, v_stride_h;
  int elem_bytes;            // 2 (bf16/fp16) or 4 (float32)
  const int64_t* slots;      // [N]
  void* k_cache;             // [slots, Hkv, D] contiguous, the same dtype
  void* v_cache;
  void* const* cache_bases = nullptr;  // or device [2]: {K, V} addresses read by the kernel (KvDirectory), 16-byte aligned
};
void kv_write_copy(const KvCopyArgs& a, cudaStream_t stream);

// ---- sampling (sampler.cu) -------------------------------------------------------------------
// Per row, the full-vocabulary log-sum-exp of logits * inv_t and the exponential race
// argmax(logits * inv_t - log(-log U)) with U = race_uniform(seed, v) (rollout/race_noise.h), or
// plain argmax for greedy rows; ties go to the lower index. No truncation (top-k / top-p rows take
// the reference path). A block per (row, vocabulary chunk), then a warp per row merges the chunks.
constexpr int64_t kMaxSampleChunks = 32;      // one merging lane each
constexpr int64_t kSampleChunkVocab = 8192;   // about this much vocabulary per chunk
int64_t sample_chunks(int64_t vocab);         // chunks for a vocabulary size: 1..kMaxSampleChunks
struct SampleArgs {
  const void* logits;        // [rows, row_stride], dtype per `dtype`: 0 float32, 1 bfloat16, 2 float16
  int dtype;
  int64_t rows, vocab, row_stride;
  const float* inv_t;        // [rows] 1 / temperature (1 for greedy rows)
  const uint64_t* seeds;     // [rows] row_seed(seed, key)
  const uint8_t* greedy;     // [rows] 1 = argmax
  int64_t* tokens;           // [rows]
  float* logprobs;           // [rows] log softmax(logits * inv_t)[token], fp32
  int64_t chunks;            // sample_chunks(vocab)
  float* part_m;             // [rows, chunks] scratch: running max, sum of exp, race key, winner
  float* part_s;
  float* part_key;
  int64_t* part_idx;
};
void sample_rows(const SampleArgs& a, cudaStream_t stream);

}  // namespace fp8rl::cuda
