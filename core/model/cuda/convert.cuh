// Element conversions shared by the CUDA kernels of core/model and rollout: every kernel computes
// in float32 and loads/stores bf16, fp16 or fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace fp8rl::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }

// Rounds to T and back: what storing an intermediate tensor in T does.
template <typename T>
__device__ __forceinline__ float round_to(float x) { return to_float(from_float<T>(x)); }

// The FP8 KV cache's byte for x (rollout/kv_cache.h): E4M3 of x / scale, saturated to +-448 with
// NaN kept NaN, as the cache's ATen reference (divide, clamp, cast) rounds it. One definition for
// every kernel that stores into that cache, so they all store the same bytes.
__device__ __forceinline__ uint8_t kv_e4m3(float x, float scale) {
  const float q = x / scale;
  const float v = q != q ? q : fminf(fmaxf(q, -448.0f), 448.0f);
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

}  // namespace fp8rl::cuda
