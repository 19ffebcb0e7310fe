// The decoder's fused inference kernels. Reference: the ATen ops of rms_norm and apply_rope
// (core/model/layers.cpp), which the trainer runs with autograd; tests/core/model/
// gpu_test_fused_inference.cpp compares the two on awkward shapes. Why: a decode step is
// launch-bound, and RMSNorm alone was 8 elementwise kernels, 4 times per layer (input, post-
// attention, q and k norms) -- over half of a decoder layer's kernels.
#include "core/model/cuda/fused_inference.h"
#include "core/model/cuda/convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>

namespace fp8rl::cuda {
namespace {

constexpr int kRowsPerBlock = 4;  // one warp per row


template <typename T>
__global__ void rms_norm_kernel(const RowsView v, const T* weight, float eps, T* out) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= v.n * v.heads) return;
  const T* x = static_cast<const T*>(v.x) + (row / v.heads) * v.stride_n + (row % v.heads) * v.stride_h;
  float ss = 0.0f;
  for (int64_t d = lane; d < v.dim; d += 32) {
    const float f = to_float(x[d]);
    ss += f * f;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  const float r = rsqrtf(ss / static_cast<float>(v.dim) + eps);
  T* y = out + row * v.dim;
  for (int64_t d = lane; d < v.dim; d += 32) y[d] = from_float<T>(to_float(weight[d]) * round_to<T>(to_float(x[d]) * r));
}

template <typename T>
__global__ void rope_kernel(const RowsView v, const T* cos, const T* sin, T* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // element of [n, heads, dim]
  if (i >= v.n * v.heads * v.dim) return;
  const int64_t d = i % v.dim, row = i / v.dim, tok = row / v.heads, h = row % v.heads;
  const int64_t half = v.dim / 2;
  const T* x = static_cast<const T*>(v.x) + tok * v.stride_n + h * v.stride_h;
  const float rot = d < half ? -to_float(x[d + half]) : to_float(x[d - half]);
  const float a = round_to<T>(to_float(x[d]) * to_float(cos[tok * v.dim + d]));
  const float b = round_to<T>(rot * to_float(sin[tok * v.dim + d]));
  out[i] = from_float<T>(a + b);
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

void rms_norm_rows(const RowsView& v, const void* weight, float eps, void* out, cudaStream_t stream) {
  const int64_t rows = v.n * v.heads;
  if (rows == 0) return;
  const unsigned grid = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  if (v.bf16)
    rms_norm_kernel<__nv_bfloat16><<<grid, 32 * kRowsPerBlock, 0, stream>>>(
        v, static_cast<const __nv_bfloat16*>(weight), eps, static_cast<__nv_bfloat16*>(out));
  else
    rms_norm_kernel<__half><<<grid, 32 * kRowsPerBlock, 0, stream>>>(v, static_cast<const __half*>(weight), eps,
                                                                      static_cast<__half*>(out));
  check_launch("rms_norm_kernel");
}

void rope_rows(const RowsView& v, const void* cos, const void* sin, void* out, cudaStream_t stream) {
  const int64_t total = v.n * v.heads * v.dim;
  if (total == 0) return;
  const unsigned grid = static_cast<unsigned>((total + 255) / 256);
  if (v.bf16)
    rope_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(v, static_cast<const __nv_bfloat16*>(cos),
                                                         static_cast<const __nv_bfloat16*>(sin), static_cast<__nv_bfloat16*>(out));
  else
    rope_kernel<__half><<<grid, 256, 0, stream>>>(v, static_cast<const __half*>(cos), static_cast<const __half*>(sin),
                                                  static_cast<__half*>(out));
  check_launch("rope_kernel");
}

}  // namespace fp8rl::cuda
