// Prefill attention on Hopper: FlashInfer's sm90 ragged-KV kernel (FlashAttention-3's design:
// TMA loads of K/V tiles, warpgroup MMAs, a producer warpgroup and two consumer warpgroups,
// persistent CTAs walking a host-made work list). Plain pointers, no ATen; the ATen side and the
// reference it is tested against are VarlenAttention and reference_varlen_attention
// (core/model/attention.h).
//
// Layout: packed tokens, q/o [N, Hq, D], k/v [L, Hkv, D] (row strides given, last dim
// contiguous), sequence s's queries [cu_q[s], cu_q[s+1]) attend causally over its keys
// [cu_k[s], cu_k[s+1]) with the queries as the LAST keys (bottom-right alignment, as the engine's
// cached prefixes need). GQA: query head h reads KV head h / (Hq / Hkv). bfloat16, D = 128.
//
// The work list depends only on the sequence boundaries, so a forward call makes it once
// (hopper_prefill_plan) and every layer's call reuses it.
//
// Tried and removed (nineteenth session, 4fcb6cb / eba0370): the same kernel's FP8 form
// (FlashInfer's BatchFP8PrefillWithRaggedKVCacheDispatched: q/k/v in E4M3 with one scale per
// head, the softmax probabilities in E4M3 for the second matmul), with q (and a bf16 cache's k,
// v) quantized per head by an amax and a byte kernel, an FP8 cache's bytes read as stored. At 8K
// causal tokens, Qwen3-8B heads, H100: 845-849 us a layer against this kernel's 959-985
// (1.14-1.17x; its other tile shapes, 128 keys x 3 or 4 stages and 256 x 2, were slower), of
// which the quantization took 78 us (q) to 135 (q, k, v) back: prefill GPU time 1.01-1.02x
// (docs/BENCHMARKS.md). Not worth E4M3 queries and probabilities in every rollout; worth
// measuring again with a faster FP8 kernel.

#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace fp8rl::cuda {

// Whether these heads are compiled in, on this device (sm90: the kernel uses wgmma and TMA).
bool hopper_prefill_supports(int device, int64_t head_dim);

// FlashInfer's plan: where each of its eight int32 work arrays sits in the device workspace,
// and whether one schedule serves every head (very long batches).
struct HopperPrefillPlan {
  std::array<int64_t, 9> info{};
};

// Device workspace bytes a plan of this batch needs (an upper bound).
size_t hopper_prefill_workspace_bytes(int64_t num_sequences, int64_t num_q_tokens, int64_t num_q_heads);

// Splits the batch's (128-query tile, query head) pairs among the SMs (FlashInfer's
// PrefillSM90Plan, longest sequences first) and copies the work list to `workspace` on
// `stream`. cu_q / cu_k: [S+1] host boundaries. Throws on a workspace that is too small.
HopperPrefillPlan hopper_prefill_plan(const int64_t* cu_q, const int64_t* cu_k, int64_t num_sequences,
                                      int64_t num_q_heads, int64_t num_kv_heads, int64_t head_dim, void* workspace,
                                      size_t workspace_bytes, cudaStream_t stream);

struct HopperPrefillArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t q_stride_n, q_stride_h;  // elements
  int64_t k_stride_n, k_stride_h;
  int64_t v_stride_n, v_stride_h;
  int64_t o_stride_n, o_stride_h;
  int64_t num_q_tokens, num_kv_tokens;
  int64_t num_q_heads, num_kv_heads, head_dim;
  float scale;  // softmax scale, usually D^-0.5
  const void* workspace;
  HopperPrefillPlan plan;
};

// out = causal softmax(scale q k^T) v per sequence and head; bfloat16 in and out.
void hopper_prefill(const HopperPrefillArgs& a, cudaStream_t stream);

}  // namespace fp8rl::cuda
