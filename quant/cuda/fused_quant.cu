// RMSNorm and SiLU-mul fused with the FP8 quantization of their output, in 1x128 groups or one
// scale per row (per token) (scaling_kernels.h says what and how exactly). Why: in a decode step
// every FP8 projection's input was made by one kernel (RMSNorm before q/k/v and gate/up, SiLU-mul
// before down), written to memory in BF16, read back by the quantization kernel and written
// again in FP8: three of a layer's kernels exist only for that round trip. References: the
// unfused pair (tests/quant/gpu_test_fused_quant.cpp).
#include "quant/cuda/scaling_kernels.h"
#include "core/util/pdl.cuh"

#include <cuda_bf16.h>

#include <stdexcept>
#include <string>

#include "core/model/cuda/fused_rows.cuh"
#include "quant/cuda/fp8_round.cuh"

namespace fp8rl::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 256;  // rms_norm_rows' block per row: its reduction order is kept
constexpr int kVec = 8;        // one 16-byte load; a half-warp holds one 128-wide group
constexpr int kSpan = kThreads * kVec;
using P = Pack<bf16, kVec>;

// Per-token quantization of a row whose elements value(d, v) yields, 8 at a time, for the
// kVec-aligned column spans d = first, first + step, ... below cols_padded (zeros past cols):
// a pass for the row's amax (over the block: every thread of the block holds a part of the row),
// then one that recomputes the elements and stores them scaled. quantize_tiles' bytes: the same
// amax (a maximum, in any order), scale_from_amax and to_fp8.
template <typename Value>
__device__ __forceinline__ void quantize_row(const ActQuantOut& o, int64_t m, int64_t first, int64_t step,
                                             const Value& value) {
  float amax = 0.0f;
  bool bad = false;
  for (int64_t d = first; d < o.cols_padded; d += step) {
    float v[kVec] = {};
    if (d < o.cols) value(d, v);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      bad |= !isfinite(v[i]);
      amax = fmaxf(amax, fabsf(v[i]));
    }
  }
  if (bad && o.nonfinite) atomicExch(o.nonfinite, 1);
  __shared__ float smem[kThreads / 32];
  const float s = scale_from_amax(block_max<kThreads>(amax, smem), o.fp8_max, o.pow2);
  const float inv = 1.0f / s;
  if (threadIdx.x == 0) o.scale[m] = s;
  for (int64_t d = first; d < o.cols_padded; d += step) {
    float v[kVec] = {};
    if (d < o.cols) value(d, v);
    alignas(8) uint8_t q[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) q[i] = to_fp8(v[i], inv, o.e5m2);
    *reinterpret_cast<uint2*>(o.out + m * o.cols_padded + d) = *reinterpret_cast<const uint2*>(q);
  }
}

// Block m: padded row m. Rows past `rows` are all zeros (scale 1), as quantize_groups_1x128
// writes them. Warps enter an iteration together (cols_padded % 256 == 0), as the group's
// shuffles require. With a residual (a.residual set) the row normed is s = x + residual, stored
// to a.sum first (each thread then reads back its own elements). Per token (no padding rows):
// the row's elements are computed twice, for its amax and then for its bytes (a second read of
// 8-16 KB a row from L1/L2, instead of holding a row of any length in registers).
__global__ void __launch_bounds__(kThreads) rms_norm_quant_kernel(const bf16* x, int64_t stride_n, const bf16* weight,
                                                                  float eps, ActQuantOut o, ResidualAdd a,
                                                                  bool trigger_first) {
  pdl::begin(trigger_first);  // before any global memory access: core/util/pdl.cuh
  const int64_t m = blockIdx.x;
  const int t = threadIdx.x;
  const bool real = m < o.rows;  // uniform over the block, so row_sum's barrier is safe
  const bool add = a.residual != nullptr;
  const bf16* xr = x + (real ? m : 0) * stride_n;
  float r = 0.0f;
  if (real) {
    float ss;
    if (add) {
      bf16* sr = static_cast<bf16*>(a.sum) + m * o.cols;
      ss = add_rms_partial_sum<bf16, kThreads, kVec>(xr, static_cast<const bf16*>(a.residual) + m * a.residual_stride,
                                                     sr, o.cols, t);
      xr = sr;
    } else {
      ss = rms_partial_sum<bf16, kThreads, kVec>(xr, o.cols, t);
    }
    r = rsqrtf(row_sum<kThreads>(ss) / static_cast<float>(o.cols) + eps);
  }
  if (o.per_token) {
    quantize_row(o, m, static_cast<int64_t>(t) * kVec, kSpan, [&](int64_t d, float (&v)[kVec]) {
      const P p = *reinterpret_cast<const P*>(xr + d), w = *reinterpret_cast<const P*>(weight + d);
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = to_float(rms_norm_element(p.v[i], w.v[i], r));
    });
    return;
  }
  for (int64_t d = static_cast<int64_t>(t) * kVec; d < o.cols_padded; d += kSpan) {
    float v[kVec] = {};
    if (real && d < o.cols) {
      const P p = *reinterpret_cast<const P*>(xr + d), w = *reinterpret_cast<const P*>(weight + d);
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = to_float(rms_norm_element(p.v[i], w.v[i], r));
    }
    quantize_group_half_warp(v, true, o.fp8_max, o.e5m2, o.pow2, o.scale + (d / 128) * o.rows_padded + m,
                             o.out + m * o.cols_padded + d, o.nonfinite);
  }
}

// Block (c, m): columns [c * kSpan, (c + 1) * kSpan) of padded row m (no reduction along the
// row, so a row spreads over several blocks: one 12288-wide row is 6 of them at batch 1). Per
// token, block (0, m) takes all of row m: its scale needs the row's amax.
__global__ void __launch_bounds__(kThreads) silu_mul_quant_kernel(const bf16* gate_up, int64_t stride_n, ActQuantOut o,
                                                                  bool trigger_first) {
  pdl::begin(trigger_first);  // before any global memory access: core/util/pdl.cuh
  const int64_t m = blockIdx.y;
  if (o.per_token) {
    const bf16* row = gate_up + m * stride_n;
    quantize_row(o, m, static_cast<int64_t>(threadIdx.x) * kVec, kSpan, [&](int64_t d, float (&v)[kVec]) {
      const P g = *reinterpret_cast<const P*>(row + d), u = *reinterpret_cast<const P*>(row + o.cols + d);
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = to_float(silu_mul_element(g.v[i], u.v[i]));
    });
    return;
  }
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kSpan + static_cast<int64_t>(threadIdx.x) * kVec;
  if (d >= o.cols_padded) return;  // whole warps (cols_padded % 256 == 0)
  float v[kVec] = {};
  if (m < o.rows && d < o.cols) {
    const bf16* row = gate_up + m * stride_n;
    const P g = *reinterpret_cast<const P*>(row + d), u = *reinterpret_cast<const P*>(row + o.cols + d);
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] = to_float(silu_mul_element(g.v[i], u.v[i]));
  }
  quantize_group_half_warp(v, true, o.fp8_max, o.e5m2, o.pow2, o.scale + (d / 128) * o.rows_padded + m,
                           o.out + m * o.cols_padded + d, o.nonfinite);
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

void rms_norm_quantize(const void* x, int64_t stride_n, const void* weight, float eps, const ActQuantOut& o,
                       cudaStream_t stream, const ResidualAdd& add) {
  if (o.rows_padded == 0) return;
  pdl::launch(rms_norm_quant_kernel, static_cast<unsigned>(o.rows_padded), kThreads, 0, stream,
      static_cast<const bf16*>(x), stride_n, static_cast<const bf16*>(weight), eps, o, add, early_trigger(o.rows));
  check_launch("rms_norm_quant_kernel");
}

void silu_mul_quantize(const void* gate_up, int64_t stride_n, const ActQuantOut& o, cudaStream_t stream) {
  if (o.rows_padded == 0) return;
  const unsigned spans = o.per_token ? 1u : static_cast<unsigned>((o.cols_padded + kSpan - 1) / kSpan);
  const dim3 grid(spans, static_cast<unsigned>(o.rows_padded));
  pdl::launch(silu_mul_quant_kernel, grid, kThreads, 0, stream, static_cast<const bf16*>(gate_up), stride_n, o,
              early_trigger(o.rows));
  check_launch("silu_mul_quant_kernel");
}

}  // namespace fp8rl::cuda
