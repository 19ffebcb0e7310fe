// Device pieces of the decoder's fused row kernels, shared by core/model/cuda/fused_inference.cu
// (RMSNorm, SiLU-mul) and quant/cuda/fused_quant.cu (the same ops fused with the FP8 1x128
// quantization of their output): one definition of each element formula and of the row
// reduction's order, so the fused kernels produce the unfused kernels' bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/model/cuda/convert.cuh"

namespace fp8rl::cuda {

// Sum over the THREADS threads that share a row: a warp (shuffles), or a whole block of
// THREADS / 32 warps (shuffles, then the warps' sums through shared memory, added in warp order).
template <int THREADS>
__device__ __forceinline__ float row_sum(float s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if constexpr (THREADS > 32) {
    __shared__ float warp_sums[THREADS / 32];
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = s;
    __syncthreads();
    s = 0.0f;
#pragma unroll
    for (int w = 0; w < THREADS / 32; ++w) s += warp_sums[w];
  }
  return s;
}

// VEC consecutive elements, loaded or stored as one access (16 bytes for 8 bf16/fp16).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// The sum of squares one thread of a THREADS-wide row group accumulates: elements
// t*VEC + j*THREADS*VEC (VEC at a time). With row_sum<THREADS>, the order every RMSNorm kernel uses.
template <typename T, int THREADS, int VEC>
__device__ __forceinline__ float rms_partial_sum(const T* x, int64_t dim, int t) {
  float ss = 0.0f;
  for (int64_t d = static_cast<int64_t>(t) * VEC; d < dim; d += THREADS * VEC) {
    const Pack<T, VEC> p = *reinterpret_cast<const Pack<T, VEC>*>(x + d);
#pragma unroll
    for (int i = 0; i < VEC; ++i) ss += to_float(p.v[i]) * to_float(p.v[i]);
  }
  return ss;
}

// The residual stream's next value x + y as ATen's bf16/fp16 add rounds it (in float, once).
template <typename T>
__device__ __forceinline__ T add_element(T x, T y) {
  return from_float<T>(to_float(x) + to_float(y));
}

// rms_partial_sum of s = x + y (add_element), storing s: the same elements in the same order,
// so the norm of the stored sum reduces exactly as an RMSNorm of it would.
template <typename T, int THREADS, int VEC>
__device__ __forceinline__ float add_rms_partial_sum(const T* x, const T* y, T* s, int64_t dim, int t) {
  float ss = 0.0f;
  for (int64_t d = static_cast<int64_t>(t) * VEC; d < dim; d += THREADS * VEC) {
    const Pack<T, VEC> a = *reinterpret_cast<const Pack<T, VEC>*>(x + d), b = *reinterpret_cast<const Pack<T, VEC>*>(y + d);
    Pack<T, VEC> o;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      o.v[i] = add_element(a.v[i], b.v[i]);
      ss += to_float(o.v[i]) * to_float(o.v[i]);
    }
    *reinterpret_cast<Pack<T, VEC>*>(s + d) = o;
  }
  return ss;
}

// HF's RMSNorm element: weight * dtype(x * r), r = rsqrt(mean(x^2) + eps) in float32.
template <typename T>
__device__ __forceinline__ T rms_norm_element(T x, T weight, float r) {
  return from_float<T>(to_float(weight) * round_to<T>(to_float(x) * r));
}

// dtype(silu(gate)) * up as ATen rounds at::silu(gate) * up: silu = g / (1 + exp(-g)) in float
// (expf, as c10::cuda::compat::exp), rounded to T, times up, rounded to T.
template <typename T>
__device__ __forceinline__ T silu_mul_element(T gate, T up) {
  const float a = to_float(gate);
  return from_float<T>(round_to<T>(a / (1.0f + expf(-a))) * to_float(up));
}

}  // namespace fp8rl::cuda
