// FP8 scaling kernels. Reference: quantize_{weight,activation}_reference (quant/scaling.cpp),
// matched bit for bit: same scale rule (scale_from_amax), IEEE division x / s (no fast-math),
// the same saturating round-to-nearest-even conversion (__NV_SATFINITE).
//
// Weights are quantized once per optimizer step (full fine-tuning) or once at load (LoRA), so
// quantize_tiles favours simplicity: one CUDA block per tile, two passes over the tile (the
// second hits L2). The 1x128 activation path runs before every FP8 GEMM, so it is fused into
// one pass: a warp per group, 4 elements per lane, amax by warp shuffles.
#include "quant/cuda/scaling_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <stdexcept>
#include <string>

namespace fp8rl::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float scale_from_amax(float amax, float fp8_max, bool pow2) {
  if (!(amax > 0.0f)) return 1.0f;
  float s = amax / fp8_max;
  if (!pow2) return s;
  if (s < 1.17549435e-38f) return 1.17549435e-38f;
  unsigned bits = __float_as_uint(s);
  if (bits & 0x007FFFFFu) bits = (bits & 0x7F800000u) + 0x00800000u;
  return __uint_as_float(bits);
}

__device__ __forceinline__ uint8_t to_fp8(float v, float s, bool e5m2) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v / s, __NV_SATFINITE, e5m2 ? __NV_E5M2 : __NV_E4M3));
}

__device__ __forceinline__ float load(const void* x, bool bf16, int64_t i) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(x)[i]) : static_cast<const float*>(x)[i];
}

// Element (r, c) of the padded matrix: the input value, or 0 in the padding.
__device__ __forceinline__ float at_padded(const QuantArgs& a, int64_t r, int64_t c) {
  return (r < a.rows && c < a.cols) ? load(a.x, a.x_bf16, r * a.cols + c) : 0.0f;
}

__device__ __forceinline__ float block_max(float v, float* smem) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? smem[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) smem[0] = v;
  }
  __syncthreads();
  return smem[0];
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
  const float s = scale_from_amax(block_max(amax, smem), a.fp8_max, a.pow2);
  if (threadIdx.x == 0) a.scale[tile] = s;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const int64_t r = r0 + i / tile_cols, c = c0 + i % tile_cols;
    a.out[r * a.cols_padded + c] = to_fp8(at_padded(a, r, c), s, a.e5m2);
  }
}

// A warp per 1 x 128 group; lane l owns columns [4l, 4l + 4) of it.
__global__ void groups_kernel(QuantArgs a, bool vec) {
  const int64_t groups_per_row = a.cols_padded / 128;
  const int64_t group = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (group >= a.rows * groups_per_row) return;  // whole warps exit together
  const int64_t m = group / groups_per_row, kb = group % groups_per_row;
  const int64_t c = kb * 128 + lane * 4;
  float v[4];
  if (vec && c + 4 <= a.cols) {
    const int64_t i = m * a.cols + c;
    if (a.x_bf16) {
      const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const __nv_bfloat16*>(a.x) + i);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
      const float2 f0 = __bfloat1622float2(h[0]), f1 = __bfloat1622float2(h[1]);
      v[0] = f0.x; v[1] = f0.y; v[2] = f1.x; v[3] = f1.y;
    } else {
      const float4 f = *reinterpret_cast<const float4*>(static_cast<const float*>(a.x) + i);
      v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = (c + j < a.cols) ? load(a.x, a.x_bf16, m * a.cols + c + j) : 0.0f;
  }
  float amax = 0.0f;
  bool bad = false;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    bad |= !isfinite(v[j]);
    amax = fmaxf(amax, fabsf(v[j]));
  }
  if (bad && a.nonfinite) atomicExch(a.nonfinite, 1);
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float s = scale_from_amax(amax, a.fp8_max, a.pow2);
  if (lane == 0) a.scale[kb * a.rows + m] = s;
  uchar4 q;
  q.x = to_fp8(v[0], s, a.e5m2);
  q.y = to_fp8(v[1], s, a.e5m2);
  q.z = to_fp8(v[2], s, a.e5m2);
  q.w = to_fp8(v[3], s, a.e5m2);
  *reinterpret_cast<uchar4*>(a.out + m * a.cols_padded + c) = q;  // cols_padded % 128 == 0: aligned
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
  amax = block_max(amax, smem);
  // Non-negative floats order like their bit patterns as unsigned integers.
  if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(amax));
}

__global__ void cast_kernel(QuantArgs a, const unsigned* amax_bits) {
  const float s = scale_from_amax(__uint_as_float(*amax_bits), a.fp8_max, a.pow2);
  const int64_t n = a.rows_padded * a.cols_padded;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (first == 0) a.scale[0] = s;
  for (int64_t i = first; i < n; i += static_cast<int64_t>(gridDim.x) * kThreads)
    a.out[i] = to_fp8(at_padded(a, i / a.cols_padded, i % a.cols_padded), s, a.e5m2);
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
  const int64_t warps = a.rows * (a.cols_padded / 128);
  if (warps == 0) return;
  const int elem = a.x_bf16 ? 2 : 4;
  // Vector loads need every row start aligned: K % 4 == 0 and an aligned base pointer.
  const bool vec = a.cols % 4 == 0 && reinterpret_cast<uintptr_t>(a.x) % (4 * elem) == 0;
  const int64_t blocks = (warps * 32 + kThreads - 1) / kThreads;
  groups_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a, vec);
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
