// Element conversions shared by the CUDA kernels of core/model and rollout: every kernel computes
// in float32 and loads/stores bf16, fp16 or fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

}  // namespace fp8rl::cuda
