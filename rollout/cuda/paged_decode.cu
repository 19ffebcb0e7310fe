// Paged decode attention: one query per sequence over its cached keys, read in place through the
// block table (no gather of K/V into a packed copy). Reference: the engine's gather path
// (rollout/paged_attention.cpp: gather the context's keys, then whole-sequence attention), which
// tests/rollout/gpu_test_paged_decode.cpp compares this against on awkward shapes.
//
// Decode is memory-bound: per layer a step reads every cached key and value of every sequence
// once, and the arithmetic is 2 * g FMAs per element. So the kernel is shaped for bytes in
// flight, not for the matrix units:
//   - one block = (sequence, KV head, split); it serves the g query heads of that KV head, so
//     each K/V row is read once for all g heads (GQA without repeating K/V);
//   - scores: each warp reads whole key rows (8-16 bytes per lane, coalesced), 4 rows per warp
//     issued before the first dot product; a row's dot products are reduced by shuffles;
//   - online softmax per tile of 64 keys (running max and sum, in log2 units: exp2f);
//   - values: threads across the head dimension, keys split between thread groups when D < 128;
//   - split-K over the context when the batch alone does not fill the GPU (batch 1: up to 64
//     chunks), merged by a second kernel from each chunk's (max, sum, unnormalised output).
// The number of splits depends on the batch shape only, never on context lengths, so one CUDA
// graph per batch size replays for any context; splits with no keys exit after marking
// themselves empty.
#include "rollout/cuda/rollout_kernels.h"
#include "core/model/cuda/convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <stdexcept>
#include <string>

namespace fp8rl::cuda {

// An FP8 KV cache holds E4M3 bit patterns in bytes (rollout/kv_cache.h); the scale is applied
// outside the inner loops (to q for keys, to the output for values). Declared in the same
// namespace as convert.cuh's overloads, not in the anonymous one below: there it would hide them
// from the kernels' unqualified calls, and bf16 would convert to uint8_t silently.
__device__ __forceinline__ float to_float(uint8_t x) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(x), __NV_E4M3)));
}

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 64;      // keys per online-softmax step
constexpr float kLog2e = 1.4426950408889634f;


template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// N consecutive elements at p (aligned to N * sizeof(T)) as floats, in one load.
template <typename T, int N>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[N]) {
  static_assert(sizeof(T) * N <= 16, "at most one 16-byte load");
  const Vec<T, N> x = *reinterpret_cast<const Vec<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_float(x.v[i]);
}

// T: the dtype of q and the output; C: the cache's element (T, or uint8_t holding E4M3).
// GMAX: compile-time bound on the query heads per KV head (register arrays need constant sizes);
// the actual count a.num_q_heads / a.num_kv_heads is <= GMAX.
template <typename T, typename C, int D, int GMAX>
__global__ void __launch_bounds__(kThreads) paged_decode_kernel(const PagedDecodeArgs a) {
  constexpr int kLanes = D < 32 ? D : 32;               // lanes sharing one key row (scores)
  constexpr int kEpl = D / kLanes;                      // elements per lane
  constexpr int kRowsPerWarp = 32 / kLanes;             // key rows per warp per load
  constexpr int kUnroll = kEpl >= 8 ? 4 : 8;            // key rows a warp loads before its first dot product
  // Value pass: kDpt dims per thread. With few query heads per KV head, 8 (one 16-byte load of
  // bf16, 8 bytes of E4M3) per thread and key: a row of V is read by D / 8 threads, and kGroups
  // rows are in flight per block at once (one dim per thread, the first version, read 2 bytes per
  // load and walked a tile's 64 keys in 16 dependent rounds). With many, the accumulators
  // acc[GMAX][kDpt] must stay in registers, so fewer.
  constexpr int kDpt = GMAX <= 4 ? (D < 8 ? D : 8) : (D > kThreads ? D / kThreads : 1);
  constexpr int kDimThreads = D / kDpt;                 // threads across the head dimension (<= 128)
  constexpr int kGroups = kThreads / kDimThreads;       // key groups in the value pass

  __shared__ float q_s[GMAX][D];        // queries * scale * log2(e)
  __shared__ float p_s[GMAX][kTile];    // scores, then probabilities, of the tile
  __shared__ int64_t slot_s[kTile];     // cache slot of each key of the tile
  __shared__ float alpha_s[GMAX], m_s[GMAX], l_s[GMAX];

  const int b = blockIdx.x, h = blockIdx.y, z = blockIdx.z;
  const int splits = gridDim.z;
  const int G = static_cast<int>(a.num_q_heads / a.num_kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int ctx = a.context_lens[b];
  // Chunks of whole tiles; a short context uses fewer splits (at least one tile each).
  const int active = max(1, min(splits, (ctx + kTile - 1) / kTile));
  const int chunk = ((ctx + active - 1) / active + kTile - 1) / kTile * kTile;
  const int start = z * chunk, end = min(ctx, start + chunk);
  const int64_t head0 = static_cast<int64_t>(b) * a.num_q_heads + static_cast<int64_t>(h) * G;  // first query row

  if (start >= end) {
    if (splits > 1) {
      if (tid < G) {
        float* ml = a.part_ml + ((head0 + tid) * splits + z) * 2;
        ml[0] = -INFINITY;
        ml[1] = 0.0f;
      }
    } else {  // no keys at all (outside the contract): a defined output
      T* out = static_cast<T*>(a.out);
      for (int i = tid; i < G * D; i += kThreads) out[head0 * D + i] = from_float<T>(0.0f);
    }
    return;
  }

  const T* q = static_cast<const T*>(a.q);
  // FP8 keys are stored / k_scale: fold k_scale into q (scores = q . (stored * k_scale)).
  const float qscale = a.scale * kLog2e * (a.k_scale != nullptr ? *a.k_scale : 1.0f);
  const float vscale = a.v_scale != nullptr ? *a.v_scale : 1.0f;
  for (int i = tid; i < GMAX * D; i += kThreads) {
    const int g = i / D, d = i % D;
    q_s[g][d] = g < G ? to_float(q[(head0 + g) * D + d]) * qscale : 0.0f;
  }
  if (tid < GMAX) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  const int d0 = (tid % kDimThreads) * kDpt;  // value pass: this thread's dims
  const int grp = tid / kDimThreads;          // and its key group
  float acc[GMAX][kDpt];
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int j = 0; j < kDpt; ++j) acc[g][j] = 0.0f;

  const C* kc = static_cast<const C*>(a.k_cache) + static_cast<int64_t>(h) * D;
  const C* vc = static_cast<const C*>(a.v_cache) + static_cast<int64_t>(h) * D;
  const int64_t row_stride = a.num_kv_heads * D;  // elements between consecutive slots
  const int32_t* table = a.block_tables + static_cast<int64_t>(b) * a.table_stride;
  const int sub = lane / kLanes, sl = lane % kLanes;  // which row of the warp's rows, lane within it
  __syncthreads();

  for (int t0 = start; t0 < end; t0 += kTile) {
    const int n = min(kTile, end - t0);
    if (tid < n) {
      const int t = t0 + tid;
      slot_s[tid] = static_cast<int64_t>(table[t / a.block_size]) * a.block_size + t % a.block_size;
    }
    __syncthreads();

    // Scores (log2 units). The loop bound is uniform per warp, so every lane reaches the shuffles.
    for (int i0 = warp * kRowsPerWarp; i0 < n; i0 += kWarps * kRowsPerWarp * kUnroll) {
      float kf[kUnroll][kEpl];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = i0 + u * kWarps * kRowsPerWarp + sub;
        if (i < n) {
          load_floats<C, kEpl>(kc + slot_s[i] * row_stride + sl * kEpl, kf[u]);
        } else {
#pragma unroll
          for (int e = 0; e < kEpl; ++e) kf[u][e] = 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = i0 + u * kWarps * kRowsPerWarp + sub;
#pragma unroll
        for (int g = 0; g < GMAX; ++g) {
          if (g < G) {
            float s = 0.0f;
#pragma unroll
            for (int e = 0; e < kEpl; ++e) s += q_s[g][sl * kEpl + e] * kf[u][e];
#pragma unroll
            for (int o = kLanes / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (sl == 0 && i < n) p_s[g][i] = s;
          }
        }
      }
    }
    __syncthreads();

    // Online softmax: one warp per head.
    for (int g = warp; g < G; g += kWarps) {
      float mx = -INFINITY;
      for (int i = lane; i < n; i += 32) mx = fmaxf(mx, p_s[g][i]);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_old = m_s[g], m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      for (int i = lane; i < n; i += 32) {
        const float p = exp2f(p_s[g][i] - m_new);
        p_s[g][i] = p;
        sum += p;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_new);  // 0 on the first tile (m_old = -inf)
        alpha_s[g] = alpha;
        l_s[g] = l_s[g] * alpha + sum;
        m_s[g] = m_new;
      }
    }
    __syncthreads();

    // Values.
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      const float alpha = g < G ? alpha_s[g] : 0.0f;
#pragma unroll
      for (int j = 0; j < kDpt; ++j) acc[g][j] *= alpha;
    }
#pragma unroll 4
    for (int i = grp; i < n; i += kGroups) {
      float vf[kDpt];
      load_floats<C, kDpt>(vc + slot_s[i] * row_stride + d0, vf);
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        if (g < G) {
          const float p = p_s[g][i];
#pragma unroll
          for (int j = 0; j < kDpt; ++j) acc[g][j] += p * vf[j];
        }
      }
    }
    __syncthreads();  // the next tile overwrites slot_s and p_s
  }

  // The key groups' partial outputs: summed in a fixed order (the same bits every run) into q_s,
  // free once the last tile's scores are done. Groups in one warp (kDimThreads < 32) first add by
  // shuffles; then each warp (or, for wider groups, each group) adds its part in turn.
  if constexpr (kGroups > 1) {
    if constexpr (kDimThreads < 32) {
#pragma unroll
      for (int o = kDimThreads; o < 32; o <<= 1)
#pragma unroll
        for (int g = 0; g < GMAX; ++g)
#pragma unroll
          for (int j = 0; j < kDpt; ++j) acc[g][j] += __shfl_xor_sync(0xffffffffu, acc[g][j], o);
    }
    constexpr int kParts = kDimThreads < 32 ? kWarps : kGroups;
    const int part = kDimThreads < 32 ? warp : grp;
    const bool holds = kDimThreads >= 32 || lane < kDimThreads;
    for (int r = 0; r < kParts; ++r) {
      if (part == r && holds) {
#pragma unroll
        for (int g = 0; g < GMAX; ++g)
          if (g < G)
#pragma unroll
            for (int j = 0; j < kDpt; ++j) q_s[g][d0 + j] = r == 0 ? acc[g][j] : q_s[g][d0 + j] + acc[g][j];
      }
      __syncthreads();
    }
  }
  // Out: normalised, or (splits > 1) the unnormalised chunk with its (max, sum) for the merge.
  auto emit = [&](int g, int d, float v) {
    if (splits == 1)
      static_cast<T*>(a.out)[(head0 + g) * D + d] = from_float<T>(v * (vscale / l_s[g]));
    else
      a.part_acc[((head0 + g) * splits + z) * D + d] = v * vscale;
  };
  if constexpr (kGroups > 1) {
    for (int i = tid; i < G * D; i += kThreads) emit(i / D, i % D, q_s[i / D][i % D]);
  } else {
#pragma unroll
    for (int g = 0; g < GMAX; ++g)
      if (g < G)
#pragma unroll
        for (int j = 0; j < kDpt; ++j) emit(g, d0 + j, acc[g][j]);
  }
  if (splits > 1 && tid < G) {
    float* ml = a.part_ml + ((head0 + tid) * splits + z) * 2;
    ml[0] = m_s[tid];
    ml[1] = l_s[tid];
  }
}

// Merges the splits of one query head: out = sum_z 2^(m_z - M) acc_z / sum_z 2^(m_z - M) l_z.
// The splits' weights are found once, in parallel, into shared memory (the first version walked
// the splits serially per dimension: ~10 us per layer at batch 1, where most splits are empty).
template <typename T>
__global__ void paged_decode_merge_kernel(const PagedDecodeArgs a) {
  constexpr int kMaxSplits = 64;  // paged_decode_splits' cap
  __shared__ float w_s[kMaxSplits];
  __shared__ float inv_s;
  const int64_t row = blockIdx.x;  // b * Hq + head
  const int splits = static_cast<int>(a.splits), D = static_cast<int>(a.head_dim);
  const float* ml = a.part_ml + row * splits * 2;
  if (threadIdx.x < 32) {  // warp 0 (blockDim >= 32): the max over the non-empty splits, then each split's weight
    const int lane = threadIdx.x;
    float m[2], l[2], M = -INFINITY;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int z = lane + 32 * k;
      m[k] = z < splits ? ml[2 * z] : -INFINITY;
      l[k] = z < splits ? ml[2 * z + 1] : 0.0f;
      if (l[k] > 0.0f) M = fmaxf(M, m[k]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    float L = 0.0f;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int z = lane + 32 * k;
      const float w = l[k] > 0.0f ? exp2f(m[k] - M) : 0.0f;
      if (z < kMaxSplits) w_s[z] = w;
      L += w * l[k];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
    if (lane == 0) inv_s = L > 0.0f ? 1.0f / L : 0.0f;
  }
  __syncthreads();
  T* out = static_cast<T*>(a.out);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float s = 0.0f;
    for (int z = 0; z < splits; ++z)
      if (w_s[z] != 0.0f) s += w_s[z] * a.part_acc[(row * splits + z) * D + d];
    out[row * D + d] = from_float<T>(s * inv_s);
  }
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

template <typename T, int D>
void launch_d(const PagedDecodeArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.batch), static_cast<unsigned>(a.num_kv_heads), static_cast<unsigned>(a.splits));
  const bool small = a.num_q_heads / a.num_kv_heads <= 4;
  if (a.fp8_kv)
    (small ? paged_decode_kernel<T, uint8_t, D, 4> : paged_decode_kernel<T, uint8_t, D, 16>)<<<grid, kThreads, 0, stream>>>(a);
  else
    (small ? paged_decode_kernel<T, T, D, 4> : paged_decode_kernel<T, T, D, 16>)<<<grid, kThreads, 0, stream>>>(a);
  check_launch("paged_decode_kernel");
  if (a.splits > 1) {
    // At least a whole warp: the merge's first step is a warp over the splits.
    paged_decode_merge_kernel<T><<<static_cast<unsigned>(a.batch * a.num_q_heads), D < 32 ? 32 : (D < 128 ? D : 128), 0,
                                   stream>>>(a);
    check_launch("paged_decode_merge_kernel");
  }
}

template <typename T>
void launch(const PagedDecodeArgs& a, cudaStream_t stream) {
  switch (a.head_dim) {
    case 16: return launch_d<T, 16>(a, stream);
    case 32: return launch_d<T, 32>(a, stream);
    case 64: return launch_d<T, 64>(a, stream);
    case 128: return launch_d<T, 128>(a, stream);
    case 256: return launch_d<T, 256>(a, stream);
    default: throw std::invalid_argument("paged_decode_attention: unsupported head_dim " + std::to_string(a.head_dim));
  }
}

}  // namespace

bool paged_decode_supports(int64_t head_dim, int64_t group) {
  const bool d = head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256;
  return d && group >= 1 && group <= 16;
}

int64_t paged_decode_splits(int64_t batch, int64_t num_kv_heads, int sm_count) {
  const int64_t blocks = batch * num_kv_heads;
  const int64_t want = (4 * static_cast<int64_t>(sm_count) + blocks - 1) / blocks;
  return want < 1 ? 1 : (want > 64 ? 64 : want);
}

void paged_decode_attention(const PagedDecodeArgs& a, cudaStream_t stream) {
  if (a.batch == 0) return;
  if (!paged_decode_supports(a.head_dim, a.num_q_heads / a.num_kv_heads) || a.num_q_heads % a.num_kv_heads != 0)
    throw std::invalid_argument("paged_decode_attention: unsupported shape");
  if (a.bf16)
    launch<__nv_bfloat16>(a, stream);
  else
    launch<__half>(a, stream);
}

}  // namespace fp8rl::cuda
