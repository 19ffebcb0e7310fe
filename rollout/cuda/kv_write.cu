// Writing a step's K/V into an FP8 cache in one kernel per tensor: quantize (x / scale, clamp to
// +-448, E4M3 round-to-nearest-even) and scatter to the cache slots. Reference: the ATen ops of
// KvCache::write (rollout/kv_cache.cpp: float, divide, clamp, cast, index_copy_), matched bit
// for bit (same IEEE division, same saturating conversion); tests/rollout/gpu_test_paged_decode.cpp
// compares the two. Why: those are five kernels per tensor, twice per layer, in every decode step.
#include "rollout/cuda/rollout_kernels.h"
#include "core/model/cuda/convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <stdexcept>
#include <string>

namespace fp8rl::cuda {
namespace {


template <typename T>
__global__ void kv_write_fp8_kernel(const KvWriteArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // element of [N, Hkv, D]
  const int64_t row = a.heads * a.dim;
  if (i >= a.tokens * row) return;
  const int64_t t = i / row, rest = i % row, h = rest / a.dim, d = rest % a.dim;
  const float x = to_float(static_cast<const T*>(a.x)[t * a.stride_t + h * a.stride_h + d]);
  const float q = x / *a.scale;
  const float v = q != q ? q : fminf(fmaxf(q, -448.0f), 448.0f);  // NaN stays NaN, as ATen's clamp keeps it
  a.cache[a.slots[t] * row + rest] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

}  // namespace

void kv_write_fp8(const KvWriteArgs& a, cudaStream_t stream) {
  const int64_t total = a.tokens * a.heads * a.dim;
  if (total == 0) return;
  const unsigned grid = static_cast<unsigned>((total + 255) / 256);
  switch (a.dtype) {
    case 0: kv_write_fp8_kernel<float><<<grid, 256, 0, stream>>>(a); break;
    case 1: kv_write_fp8_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(a); break;
    case 2: kv_write_fp8_kernel<__half><<<grid, 256, 0, stream>>>(a); break;
    default: throw std::invalid_argument("kv_write_fp8: unsupported dtype");
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("kv_write_fp8_kernel: ") + cudaGetErrorString(e));
}

}  // namespace fp8rl::cuda
