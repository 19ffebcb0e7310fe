// Per-head E4M3 quantization (head_quant.h says what; quantize_heads in core/model/attention.h is
// the ATen reference). Memory-bound: the amax pass reads x once, the byte pass reads it again and
// writes a quarter (bf16 -> one byte) of it; 16-byte loads of 8 elements per thread throughout.
#include "core/model/cuda/head_quant.h"
#include "core/model/cuda/convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace fp8rl::cuda {
namespace {

constexpr int kThreads = 256;
constexpr float kE4m3Max = 448.0f;

// max that keeps a NaN once it has seen one (fmaxf would drop it), so a NaN input gives a NaN
// scale, as ATen's amax does: the attention output is then NaN, as it would be in bf16.
__device__ __forceinline__ float max_nan(float m, float v) { return (v > m || v != v) ? v : m; }

template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&f)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_float(e[i]);
}

// Block (h, c): head h over tokens [c * per, (c + 1) * per); one atomic per block. |x| >= 0 (and
// NaN with its sign cleared) orders as its int32 bits, so atomicMax on the bits is a float max.
template <typename T>
__global__ void __launch_bounds__(kThreads) head_amax_kernel(HeadQuantArgs a, int64_t per) {
  const int64_t h = blockIdx.x, vecs = a.dim / 8;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * per, t1 = t0 + per < a.n ? t0 + per : a.n;
  const T* x = static_cast<const T*>(a.x) + h * a.stride_h;
  float m = 0.0f;
  for (int64_t i = t0 * vecs + threadIdx.x; i < t1 * vecs; i += kThreads) {
    float f[8];
    load8(x + (i / vecs) * a.stride_n + (i % vecs) * 8, f);
#pragma unroll
    for (int j = 0; j < 8; ++j) m = max_nan(m, fabsf(f[j]));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = max_nan(m, __shfl_xor_sync(0xffffffffu, m, o));
  __shared__ float warp_max[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kThreads / 32; ++w) m = max_nan(m, warp_max[w]);
  atomicMax(reinterpret_cast<int*>(a.amax + h), __float_as_int(m));
}

__device__ __forceinline__ float head_scale(float amax) { return amax == 0.0f ? 1.0f : amax / kE4m3Max; }

// One thread per 8 elements of one row: 8 bytes out.
template <typename T>
__global__ void __launch_bounds__(kThreads) head_bytes_kernel(HeadQuantArgs a) {
  const int64_t vecs = a.dim / 8, total = a.n * a.heads * vecs;
  const T* x = static_cast<const T*>(a.x);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t j = i % vecs, row = i / vecs, h = row % a.heads, t = row / a.heads;
    const float scale = head_scale(a.amax[h]);
    if (i < a.heads * vecs && j == 0) a.scale[h] = scale;  // token 0's first vector of each head
    float f[8];
    load8(x + t * a.stride_n + h * a.stride_h + j * 8, f);
    uint32_t w[2] = {0u, 0u};
#pragma unroll
    for (int e = 0; e < 8; ++e) w[e / 4] |= static_cast<uint32_t>(kv_e4m3(f[e], scale)) << (8 * (e % 4));
    *reinterpret_cast<uint2*>(a.out + i * 8) = make_uint2(w[0], w[1]);
  }
}

template <typename T>
void launch(const HeadQuantArgs& a, cudaStream_t stream) {
  // ~128 tokens a block, at most 64 blocks a head: a few thousand blocks at 8K tokens, one wave's
  // worth of atomics per head.
  const int64_t chunks = std::clamp<int64_t>((a.n + 127) / 128, 1, 64), per = (a.n + chunks - 1) / chunks;
  head_amax_kernel<T><<<dim3(static_cast<unsigned>(a.heads), static_cast<unsigned>(chunks)), kThreads, 0, stream>>>(a, per);
  const int64_t vectors = a.n * a.heads * (a.dim / 8);
  const auto blocks = static_cast<unsigned>(std::clamp<int64_t>((vectors + kThreads - 1) / kThreads, 1, 8192));
  head_bytes_kernel<T><<<blocks, kThreads, 0, stream>>>(a);
}

}  // namespace

bool quantize_heads_rows(const HeadQuantArgs& a, cudaStream_t stream) {
  if (a.n < 1 || a.heads < 1 || a.dim % 8 != 0 || a.stride_n % 8 != 0 || a.stride_h % 8 != 0 ||
      reinterpret_cast<uintptr_t>(a.x) % 16 != 0 || a.heads > 65535)
    return false;
  if (a.bf16)
    launch<__nv_bfloat16>(a, stream);
  else
    launch<__half>(a, stream);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("quantize_heads_rows: ") + cudaGetErrorString(e));
  return true;
}

}  // namespace fp8rl::cuda
