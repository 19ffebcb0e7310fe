// The sampler's fused kernels: one pass over a row of logits gives both the full-vocabulary
// log-sum-exp (for the fp32 log-prob the trainer recomputes) and the exponential race that draws
// the token. The pass is split over chunks of the vocabulary, a block each, then merged by a
// warp per row: one 1024-thread block per row took ~130 us for a 152K vocabulary at any batch
// (docs/BENCHMARKS.md), most of a small model's decode step. The chunk count depends on the
// vocabulary only and the block size is fixed, so a row's log-prob has the same bits at any
// batch size. Reference: sample_reference (rollout/sampler.cpp), which computes the same race
// keys with ATen's log_softmax plus the same noise (rollout/race_noise.h); tests compare the two
// (tests/rollout/gpu_test_sampler.cpp). Replaces, per step, a full-vocabulary fp32 copy, a
// log_softmax, and per row a generator clone, a rand, two logs and an argmax.
#include "rollout/cuda/rollout_kernels.h"
#include "core/util/pdl.cuh"
#include "core/model/cuda/convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "rollout/race_noise.h"

namespace fp8rl::cuda {
namespace {

constexpr int kThreads = 256;  // per chunk block (sample_chunks_kernel says why)

// (m, s): running max and sum of exp(x - m). Combines two partial log-sum-exps.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  if (m2 > m) {
    s = (m == -INFINITY ? 0.0f : s * expf(m - m2)) + s2;
    m = m2;
  } else if (m2 != -INFINITY) {
    s += s2 * expf(m2 - m);
  }
}

// (key, index): larger key wins, the lower index on a tie; index -1 = nothing yet.
__device__ __forceinline__ void best_merge(float& key, int64_t& idx, float key2, int64_t idx2) {
  if (idx2 < 0) return;
  if (idx < 0 || key2 > key || (key2 == key && idx2 < idx)) {
    key = key2;
    idx = idx2;
  }
}

// Both merges across a warp's 32 lanes, by a fixed shuffle tree (so the result does not depend
// on timing).
__device__ __forceinline__ void warp_merge(float& m, float& s, float& key, int64_t& idx) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    lse_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    best_merge(key, idx, __shfl_xor_sync(0xffffffffu, key, o), __shfl_xor_sync(0xffffffffu, idx, o));
  }
}

// The block's (m, s) and race winner, merged across its threads by fixed shuffle trees, written
// to the scratch arrays at [row * chunks + chunk].
__device__ __forceinline__ void write_chunk_partial(const SampleArgs& a, int64_t row, int64_t chunk, float m, float s,
                                                    float key, int64_t idx) {
  warp_merge(m, s, key, idx);
  __shared__ float m_s[32], s_s[32], key_s[32];
  __shared__ int64_t idx_s[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    m_s[warp] = m;
    s_s[warp] = s;
    key_s[warp] = key;
    idx_s[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    constexpr int kWarpCount = kThreads / 32;
    m = lane < kWarpCount ? m_s[lane] : -INFINITY;
    s = lane < kWarpCount ? s_s[lane] : 0.0f;
    key = lane < kWarpCount ? key_s[lane] : -INFINITY;
    idx = lane < kWarpCount ? idx_s[lane] : -1;
    warp_merge(m, s, key, idx);
    if (lane == 0) {
      const int64_t at = row * a.chunks + chunk;
      a.part_m[at] = m;
      a.part_s[at] = s;
      a.part_key[at] = key;
      a.part_idx[at] = idx;
    }
  }
}

// Block (row, chunk): the partial log-sum-exp (m, s) and race winner (key, idx) of one slice of
// the row's vocabulary, into the scratch arrays at [row * chunks + chunk]. Each thread takes a
// pack of 16 / sizeof(T) logits at a time (one 16-byte load where the row is aligned: `aligned`,
// else one element per load), folds the pack's maximum into (m, s) with one rescale, then runs
// the race on each entry. Chunks start at multiples of the pack, so their loads stay aligned.
// 256-thread blocks with packs took 241 us at batch 256 (152K vocabulary, H100) where 1024-thread
// blocks loading one logit per thread took 310.
template <typename T>
__global__ void __launch_bounds__(kThreads) sample_chunks_kernel(const SampleArgs a, bool aligned) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  struct alignas(16) Pack {
    T v[kVec];
  };
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  const int64_t row = blockIdx.x, chunk = blockIdx.y;
  const int64_t per = ((a.vocab + a.chunks - 1) / a.chunks + kVec - 1) / kVec * kVec;
  const int64_t v0 = chunk * per, v1 = min(a.vocab, v0 + per);
  const T* x = static_cast<const T*>(a.logits) + row * a.row_stride;
  const float inv_t = a.inv_t[row];
  const bool greedy = a.greedy[row] != 0;
  const uint64_t seed = a.seeds[row];
  float m = -INFINITY, s = 0.0f, key = -INFINITY;
  int64_t idx = -1;
  for (int64_t v = v0 + static_cast<int64_t>(threadIdx.x) * kVec; v < v1; v += kThreads * kVec) {
    float xs[kVec];
    if (aligned && v + kVec <= v1) {
      const Pack p = *reinterpret_cast<const Pack*>(x + v);
#pragma unroll
      for (int i = 0; i < kVec; ++i) xs[i] = to_float(p.v[i]) * inv_t;
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) xs[i] = v + i < v1 ? to_float(x[v + i]) * inv_t : -INFINITY;
    }
    float pm = -INFINITY;
#pragma unroll
    for (int i = 0; i < kVec; ++i) pm = xs[i] > pm ? xs[i] : pm;  // NaN never raises the max
    if (pm > m) {
      s = m == -INFINITY ? 0.0f : s * expf(m - pm);
      m = pm;
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      if (xs[i] != -INFINITY) s += xs[i] == m ? 1.0f : expf(xs[i] - m);  // an infinite max counts once per entry
      if (v + i >= v1) continue;
      // Exponential race: argmax(x - log E), E = -log U ~ Exp(1) (the Gumbel-max trick).
      const uint64_t vi = static_cast<uint64_t>(v + i);
      const float k = greedy ? xs[i] : xs[i] - logf(-logf(fp8rl::rollout::race_uniform(seed, vi)));
      if ((idx < 0 || k > key) && k == k) {  // within a thread v only grows: strict > keeps the lower index; NaN never wins
        key = k;
        idx = v + i;
      }
    }
  }
  write_chunk_partial(a, row, chunk, m, s, key, idx);
}

// One warp per row: merges the row's chunks (lane c holds chunk c; a fixed shuffle tree, so the
// result does not depend on timing) and writes the token and its log-prob.
template <typename T>
__global__ void sample_merge_kernel(const SampleArgs a) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x;
  const int64_t at = row * a.chunks + lane;
  float m = lane < a.chunks ? a.part_m[at] : -INFINITY;
  float s = lane < a.chunks ? a.part_s[at] : 0.0f;
  float key = lane < a.chunks ? a.part_key[at] : -INFINITY;
  int64_t idx = lane < a.chunks ? a.part_idx[at] : -1;
  warp_merge(m, s, key, idx);
  if (lane == 0) {
    const T* x = static_cast<const T*>(a.logits) + row * a.row_stride;
    const int64_t token = idx < 0 ? 0 : idx;
    a.tokens[row] = token;
    a.logprobs[row] = to_float(x[token]) * a.inv_t[row] - (m + logf(s));
  }
}

template <typename T>
void launch(const SampleArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.rows), static_cast<unsigned>(a.chunks));
  const bool aligned = reinterpret_cast<uintptr_t>(a.logits) % 16 == 0 && (a.row_stride * sizeof(T)) % 16 == 0;
  pdl::launch(sample_chunks_kernel<T>, grid, kThreads, 0, stream, a, aligned);
  pdl::launch(sample_merge_kernel<T>, static_cast<unsigned>(a.rows), 32, 0, stream, a);
}

}  // namespace

void sample_rows(const SampleArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return;
  if (a.chunks < 1 || a.chunks > kMaxSampleChunks) throw std::invalid_argument("sample_rows: chunks out of range");
  switch (a.dtype) {
    case 0: launch<float>(a, stream); break;
    case 1: launch<__nv_bfloat16>(a, stream); break;
    case 2: launch<__half>(a, stream); break;
    default: throw std::invalid_argument("sample_rows: unsupported logits dtype");
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("sample_rows: ") + cudaGetErrorString(e));
}

int64_t sample_chunks(int64_t vocab) {
  const int64_t c = (vocab + kSampleChunkVocab - 1) / kSampleChunkVocab;
  return c < 1 ? 1 : (c > kMaxSampleChunks ? kMaxSampleChunks : c);
}

}  // namespace fp8rl::cuda
