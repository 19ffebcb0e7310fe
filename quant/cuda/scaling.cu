// FP8 scaling kernels. Reference: quantize_{weight,activation}_reference (quant/scaling.cpp),
// matched bit for bit: same scale rule (scale_from_amax), the same reciprocal 1 / s (IEEE,
// no fast-math) multiplied into each element, the same saturating round-to-nearest-even
// conversion (__NV_SATFINITE).
//
// Weights are quantized once per optimizer step (full fine-tuning) or once at load (LoRA), so
// quantize_tiles favours simplicity: one CUDA block per tile, two passes over the tile (the
// second hits L2). The 1x128 activation path runs before every FP8 GEMM, so it is fused into
// one pass: half a warp per group, 8 elements (one 16-byte bf16 load) per lane, amax by
// shuffles within the half-warp.
#include "quant/cuda/scaling_kernels.h"
#include "core/util/pdl.cuh"
#include "quant/cuda/fp8_round.cuh"

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <stdexcept>
#include <string>

namespace fp8rl::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load(const void* x, bool bf16, int64_t i) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(x)[i]) : static_cast<const float*>(x)[i];
}

// Element (r, c) of the padded matrix: the input value, or 0 in the padding.
__device__ __forceinline__ float at_padded(const QuantArgs& a, int64_t r, int64_t c) {
  return (r < a.rows && c < a.cols) ? load(a.x, a.x_bf16, r * a.cols + c) : 0.0f;
}

__global__ void tiles_kernel(QuantArgs a, int64_t tile_rows, int64_t tile_cols) {
  __shared__ float smem[kThreads / 32];
  const int64_t n_tile_cols = a.cols_padded / tile_cols;
  const int64_t tile = blockIdx.x;
  const int64_t r0 = (tile / n_tile_cols) * tile_rows, c0 = (tile % n_tile_cols) * tile_cols;
  const int64_t n = tile_rows * tile_cols;
  float amax = 0.0f;
  bool bad = false;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = at_padded(a, r0 + i / tile_cols, c0 + i % tile_cols);
    bad |= !isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
  if (bad && a.nonfinite) atomicExch(a.nonfinite, 1);
  const float s = scale_from_amax(block_max<kThreads>(amax, smem), a.fp8_max, a.pow2);
  const float inv = 1.0f / s;
  if (threadIdx.x == 0) a.scale[tile] = s;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const int64_t r = r0 + i / tile_cols, c = c0 + i % tile_cols;
    a.out[r * a.cols_padded + c] = to_fp8(at_padded(a, r, c), inv, a.e5m2);
  }
}

// Half a warp per 1 x 128 group (two groups per warp); lane l of a half owns columns
// [8l, 8l + 8) of its group: one 16-byte load of bf16 (two of float), one 8-byte store.
__global__ void groups_kernel(QuantArgs a, int64_t n_groups, bool vec, bool trigger_first) {
  pdl::begin(trigger_first);  // before any global memory access: core/util/pdl.cuh
  const int64_t groups_per_row = a.cols_padded / 128;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32, l16 = lane % 16;
  const int64_t group = 2 * warp + lane / 16;
  const bool valid = group < n_groups;  // invalid lanes still join the shuffles
  const int64_t m = valid ? group / groups_per_row : 0, kb = valid ? group % groups_per_row : 0;
  const int64_t c = kb * 128 + l16 * 8;
  float v[8];
  if (valid && vec && m < a.rows && c + 8 <= a.cols) {
    const int64_t i = m * a.cols + c;
    if (a.x_bf16) {
      const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.x) + i);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __bfloat1622float2(h[j]);
        v[2 * j] = f.x;
        v[2 * j + 1] = f.y;
      }
    } else {
      const float4 f0 = *reinterpret_cast<const float4*>(static_cast<const float*>(a.x) + i);
      const float4 f1 = *reinterpret_cast<const float4*>(static_cast<const float*>(a.x) + i + 4);
      v[0] = f0.x; v[1] = f0.y; v[2] = f0.z; v[3] = f0.w;
      v[4] = f1.x; v[5] = f1.y; v[6] = f1.z; v[7] = f1.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      v[j] = (valid && m < a.rows && c + j < a.cols) ? load(a.x, a.x_bf16, m * a.cols + c + j) : 0.0f;
  }
  quantize_group_half_warp(v, valid, a.fp8_max, a.e5m2, a.pow2, a.scale + kb * a.rows_padded + m,
                           a.out + m * a.cols_padded + c, a.nonfinite);
}

__global__ void amax_kernel(QuantArgs a, unsigned* amax_bits) {
  __shared__ float smem[kThreads / 32];
  const int64_t n = a.rows * a.cols;
  float amax = 0.0f;
  bool bad = false;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float v = load(a.x, a.x_bf16, i);
    bad |= !isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
  if (bad && a.nonfinite) atomicExch(a.nonfinite, 1);
  amax = block_max<kThreads>(amax, smem);
  // Non-negative floats order like their bit patterns as unsigned integers.
  if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(amax));
}

__global__ void cast_kernel(QuantArgs a, const unsigned* amax_bits) {
  const float s = scale_from_amax(__uint_as_float(*amax_bits), a.fp8_max, a.pow2);
  const float inv = 1.0f / s;
  const int64_t n = a.rows_padded * a.cols_padded;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (first == 0) a.scale[0] = s;
  for (int64_t i = first; i < n; i += static_cast<int64_t>(gridDim.x) * kThreads)
    a.out[i] = to_fp8(at_padded(a, i / a.cols_padded, i % a.cols_padded), inv, a.e5m2);
}

void check(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

int grid_for(int64_t n) {
  int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 1 ? 1 : blocks > 8192 ? 8192 : blocks);
}

}  // namespace

void quantize_tiles(const QuantArgs& a, int64_t tile_rows, int64_t tile_cols, cudaStream_t stream) {
  const int64_t tiles = (a.rows_padded / tile_rows) * (a.cols_padded / tile_cols);
  if (tiles == 0) return;
  tiles_kernel<<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(a, tile_rows, tile_cols);
  check("quantize_tiles");
}

void quantize_groups_1x128(const QuantArgs& a, cudaStream_t stream) {
  const int64_t groups = a.rows_padded * (a.cols_padded / 128);
  if (groups == 0) return;
  // 16-byte loads need every row start 16-byte aligned: K % 8 == 0 and an aligned base.
  const bool vec = a.cols % 8 == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
  const int64_t warps = (groups + 1) / 2;
  const int64_t blocks = (warps * 32 + kThreads - 1) / kThreads;
  pdl::launch(groups_kernel, static_cast<unsigned>(blocks), kThreads, 0, stream, a, groups, vec, early_trigger(a.rows));
  check("quantize_groups_1x128");
}

void quantize_tensor(const QuantArgs& a, unsigned* amax_bits, cudaStream_t stream) {
  if (a.rows * a.cols > 0) {
    amax_kernel<<<grid_for(a.rows * a.cols), kThreads, 0, stream>>>(a, amax_bits);
    check("quantize_tensor amax");
  }
  cast_kernel<<<grid_for(a.rows_padded * a.cols_padded), kThreads, 0, stream>>>(a, amax_bits);
  check("quantize_tensor cast");
}

}  // namespace fp8rl::cuda
