// Per-tensor FP8 quantization kernel. Reference: quantize_per_tensor_reference (fp8_cast.cpp).
//
// Memory-bound: reads 2 or 4 bytes and writes 1 per element. Each thread handles 8 elements
// per iteration so bf16 loads are 16 bytes wide; a grid-stride loop covers any n, and the
// tail (n not a multiple of 8, or misaligned pointers) takes the scalar path.
#include "quant/cuda/fp8_cast_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <stdexcept>
#include <string>

namespace fp8rl::cuda {
namespace {

template <bool kE5M2>
__device__ __forceinline__ uint8_t to_fp8(float v, float scale) {
  // IEEE division (no fast-math) so the result matches the CPU reference's x / scale exactly.
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v / scale, __NV_SATFINITE, kE5M2 ? __NV_E5M2 : __NV_E4M3));
}

__device__ __forceinline__ float load(const float* x, int64_t i) { return x[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* x, int64_t i) { return __bfloat162float(x[i]); }

template <class T, bool kE5M2>
__global__ void quantize_per_tensor_kernel(const T* __restrict__ x, uint8_t* __restrict__ out, int64_t n, float scale,
                                           bool vectorized) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t n_vec = vectorized ? n / 8 : 0;
  for (int64_t v = tid; v < n_vec; v += stride) {
    alignas(16) T in[8];
    // 8 elements: one 16-byte load for bf16, two for float.
    if constexpr (sizeof(T) == 2) {
      *reinterpret_cast<uint4*>(in) = reinterpret_cast<const uint4*>(x)[v];
    } else {
      reinterpret_cast<uint4*>(in)[0] = reinterpret_cast<const uint4*>(x)[2 * v];
      reinterpret_cast<uint4*>(in)[1] = reinterpret_cast<const uint4*>(x)[2 * v + 1];
    }
    alignas(8) uint8_t q[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) q[j] = to_fp8<kE5M2>(load(in, j), scale);
    reinterpret_cast<uint2*>(out)[v] = *reinterpret_cast<uint2*>(q);
  }
  for (int64_t i = n_vec * 8 + tid; i < n; i += stride) out[i] = to_fp8<kE5M2>(load(x, i), scale);
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

template <class T>
void launch(const T* x, uint8_t* out, int64_t n, float scale, bool e5m2, cudaStream_t stream) {
  const bool vectorized = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0;
  constexpr int kThreads = 256;
  int64_t blocks = (n / 8 + kThreads) / kThreads;
  if (blocks < 1) blocks = 1;
  if (blocks > 4096) blocks = 4096;  // grid-stride beyond this
  if (e5m2)
    quantize_per_tensor_kernel<T, true><<<static_cast<int>(blocks), kThreads, 0, stream>>>(x, out, n, scale, vectorized);
  else
    quantize_per_tensor_kernel<T, false><<<static_cast<int>(blocks), kThreads, 0, stream>>>(x, out, n, scale, vectorized);
  check(cudaGetLastError(), "quantize_per_tensor_kernel launch");
}

}  // namespace

void quantize_per_tensor(const void* x, bool x_is_bf16, uint8_t* out, int64_t n, float scale, bool e5m2,
                         cudaStream_t stream) {
  if (n == 0) return;
  if (x_is_bf16)
    launch(static_cast<const __nv_bfloat16*>(x), out, n, scale, e5m2, stream);
  else
    launch(static_cast<const float*>(x), out, n, scale, e5m2, stream);
}

}  // namespace fp8rl::cuda
