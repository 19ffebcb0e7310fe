// The small-M FP8 GEMM (quant/cuda/fp8_gemv.h says what and why).
//
// Layout of the work: warp w owns output rows [w R, w R + R) (R = 1 or 2; rows of one warp never
// straddle a 128-row scale block, since 128 % R == 0) for all M <= 4 activation rows. Lane l reads
// the 16 weight bytes at k = l * 16 + 512 j of each of its rows: a warp step covers 512 bytes of a
// row, coalesced, and each lane's 16 bytes lie inside one 128-wide scale block (kb = k / 128), so
// one pair of scales multiplies the 16-term partial dot product. Two steps are loaded before
// either is used, so each lane has 2 R 16-byte weight loads in flight. Weight loads are
// streaming (__ldcs: read once, not worth caching); activation loads go through the read-only
// cache (__ldg: every warp reads them).
#include "quant/cuda/fp8_gemv.h"
#include "core/util/pdl.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <atomic>
#include <stdexcept>
#include <string>

#include "core/util/env.h"

namespace fp8rl::cuda {
namespace {

constexpr int kThreads = 256;

// 16 E4M3 bytes -> 16 floats, in memory order (the low byte of each pair is the first element).
__device__ __forceinline__ void e4m3x16_to_float(const uint4& v, float (&f)[16]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __half2 lo(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[i] & 0xFFFFu), __NV_E4M3));
    const __half2 hi(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[i] >> 16), __NV_E4M3));
    const float2 a = __half22float2(lo), b = __half22float2(hi);
    f[4 * i] = a.x;
    f[4 * i + 1] = a.y;
    f[4 * i + 2] = b.x;
    f[4 * i + 3] = b.y;
  }
}

__device__ __forceinline__ void store(float* y, int64_t i, float v) { y[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* y, int64_t i, float v) { y[i] = __float2bfloat16(v); }

template <int M, int R, typename OutT>
__global__ void __launch_bounds__(kThreads) fp8_gemv_kernel(Fp8GemvArgs a) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) >> 5;
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int64_t n0 = warp * R;
  if (n0 >= a.N) return;
  const int64_t Kp = a.Kp, Mp = a.Mp;
  const float* w_scale = a.w_scale + (n0 >> 7) * (Kp >> 7);  // this row block's K-block scales
  const uint8_t* w = a.w + n0 * Kp;

  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;

  for (int64_t k0 = static_cast<int64_t>(lane) * 16; k0 < Kp; k0 += 1024) {
    const bool second = k0 + 512 < Kp;  // Kp % 512 == 0: either both steps or the last one
    uint4 wv[2][R];
#pragma unroll
    for (int r = 0; r < R; ++r) wv[0][r] = __ldcs(reinterpret_cast<const uint4*>(w + r * Kp + k0));
    if (second) {
#pragma unroll
      for (int r = 0; r < R; ++r) wv[1][r] = __ldcs(reinterpret_cast<const uint4*>(w + r * Kp + k0 + 512));
    }
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      if (s == 1 && !second) break;
      const int64_t k = k0 + 512 * s, kb = k >> 7;
      const float ws = __ldg(w_scale + kb);
      float wf[R][16];
#pragma unroll
      for (int r = 0; r < R; ++r) e4m3x16_to_float(wv[s][r], wf[r]);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xf[16];
        e4m3x16_to_float(__ldg(reinterpret_cast<const uint4*>(a.x + m * Kp + k)), xf);
        const float scale = ws * __ldg(a.x_scale + kb * Mp + m);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float dot = 0.0f;
#pragma unroll
          for (int j = 0; j < 16; ++j) dot = fmaf(wf[r][j], xf[j], dot);
          acc[r][m] = fmaf(dot, scale, acc[r][m]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) acc[r][m] += __shfl_xor_sync(0xFFFFFFFFu, acc[r][m], off);
  if (lane != 0) return;
  OutT* y = static_cast<OutT*>(a.y);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (n0 + r >= a.N) break;
#pragma unroll
    for (int m = 0; m < M; ++m) store(y, m * a.N + n0 + r, acc[r][m]);
  }
}

// ---- Tensor-core GEMV: mma.sync m16n8k32 E4M3 -> f32 -------------------------------------
//
// The product is computed transposed, y^T [N, M] = W [N, K] x^T [K, M]: 16 weight rows are the
// mma's M side (A, row-major) and up to 8 activation rows its N side (B), so the weight bytes go
// into the mma as loaded, with no shuffles. (On Hopper, ptxas itself widens each E4M3 mma into
// two fp16 HMMA.16816 with F2FP conversions before them: there is no FP8 mma.sync, only wgmma.
// At M <= 8 that costs nothing measurable, the kernel is bound by the weight bytes; it is why a
// version of this kernel for M up to 64 lost to cuBLASLt, docs/BENCHMARKS.md.) Fragment layout
// of m16n8k32 for 8-bit A/B
// (PTX ISA), for lane = 4 g + t (g: group 0-7, t: thread in group 0-3):
//   a0 = A[g][4t .. 4t+3], a1 = A[g+8][4t ..], a2 = A[g][16+4t ..], a3 = A[g+8][16+4t ..]
//   b0 = B[4t .. 4t+3][g], b1 = B[16+4t ..][g];  c0,c1 = C[g][2t, 2t+1], c2,c3 = C[g+8][2t, 2t+1]
// A dot product does not care in which order its K terms come, as long as A and B agree. So lane
// (g, t) loads 16 contiguous bytes of weight row g, of row g+8 and of activation row g at
// k = base + 16 t: bytes 0-7 feed one mma (as a0/a2, a1/a3, b0/b1), bytes 8-15 a second; the 4
// lanes of a group cover 64 contiguous K. Two such steps cover one 128-wide scale block, whose
// partial sums are then scaled by w_scale[n/128, kb] * x_scale[kb, m] into float totals (as
// DeepGEMM promotes per block). The 8 warps of a block split the K blocks of one 16-row tile
// round-robin and add their totals in shared memory.
constexpr int kMmaWarps = 8;

__device__ __forceinline__ void mma_e4m3(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// kChannel: per-output-channel weight scales and per-token activation scales (Fp8GemvArgs::
// channel). Nothing to scale per K block then: the MMAs accumulate the whole row into `total`,
// which the two scales multiply once at the end.
template <typename OutT, int kDepth, bool kChannel>
__global__ void __launch_bounds__(kMmaWarps * 32, kDepth > 2 ? 2 : 0) fp8_gemv_mma_kernel(Fp8GemvArgs a) {
  const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
  const int g = lane >> 2, t = lane & 3;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * 16;  // this block's 16 weight rows
  const int64_t Kp = a.Kp, Mp = a.Mp, kblocks = Kp >> 7;
  const uint8_t* w_lo = a.w + (n0 + g) * Kp + 16 * t;   // row g
  const uint8_t* w_hi = w_lo + 8 * Kp;                   // row g + 8
  const bool x_row = g < Mp;                             // activation rows past Mp are zeros
  const uint8_t* x = a.x + (x_row ? g : 0) * Kp + 16 * t;
  const float* w_scale = kChannel ? a.w_scale : a.w_scale + (n0 >> 7) * kblocks;
  // Activation columns of this lane's accumulators: c0/c2 -> m = 2t, c1/c3 -> m = 2t + 1.
  const int m0 = 2 * t, m1 = 2 * t + 1;
  float total[4] = {0.0f, 0.0f, 0.0f, 0.0f};

  // kDepth K blocks per iteration (warp w takes blocks w, w + 8, ...), all their loads issued
  // before the first mma: each lane keeps kDepth * 64 weight bytes (+ 32 activation bytes per
  // block) in flight. Three (the default) measured 1.013x two at batch 1 on an H100 (graph step
  // 4.17 -> 4.12 ms; FP8RL_GEMV_DEPTH=2 gives the old kernel); four used 128 registers with
  // spills, and asking L2 for the next iteration's weights (prefetch.global.L2) measured 0.931x:
  // docs/BENCHMARKS.md. So did every other placement of an L2 prefetch of weights tried: from
  // the quantizing kernel before each GEMV (0.96-0.75x), and of o_proj's and gate_up's first
  // 16-32 MB by bulk prefetch from the q/k norm + RoPE kernel once the q/k/v GEMV was done, where
  // HBM looked idle through attention (0.975x / 0.941x at batch 1, FP8 + FP8 KV; d876742, removed).
  // The blocks are summed in the same order at any depth, so the result's bits do not depend on it.
  uint4 lo[kDepth][2], hi[kDepth][2];
  auto load_weights = [&](int64_t kb0) {
#pragma unroll
    for (int b = 0; b < kDepth; ++b) {
      if (kb0 + b * kMmaWarps >= kblocks) break;
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int64_t k = (kb0 + b * kMmaWarps) * 128 + 64 * s;
        lo[b][s] = __ldcs(reinterpret_cast<const uint4*>(w_lo + k));
        hi[b][s] = __ldcs(reinterpret_cast<const uint4*>(w_hi + k));
      }
    }
  };
  // The first weight loads go out before pdl::begin() (core/util/pdl.cuh), so they overlap the
  // kernel launched just before this one. That is safe while that kernel does not write w and
  // lets this one launch only after its own wait (then everything before it is done and visible):
  // it is the quantization of x, or a GEMV sharing x; weights change only between rollouts. A
  // CUTLASS GEMM triggers before its epilogue, so it must never come directly before this kernel.
  // x and the scales are read after the wait.
  if (warp < kblocks) load_weights(warp);
  pdl::begin();
  for (int64_t kb0 = warp; kb0 < kblocks; kb0 += kDepth * kMmaWarps) {
    if (kb0 != warp) load_weights(kb0);
    uint4 xv[kDepth][2];
#pragma unroll
    for (int b = 0; b < kDepth; ++b) {
      if (kb0 + b * kMmaWarps >= kblocks) break;
#pragma unroll
      for (int s = 0; s < 2; ++s)
        xv[b][s] = x_row ? __ldg(reinterpret_cast<const uint4*>(x + (kb0 + b * kMmaWarps) * 128 + 64 * s))
                         : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int b = 0; b < kDepth; ++b) {
      const int64_t kb = kb0 + b * kMmaWarps;
      if (kb >= kblocks) break;
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      float (&acc)[4] = kChannel ? total : part;
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const uint32_t a01[4] = {lo[b][s].x, hi[b][s].x, lo[b][s].y, hi[b][s].y};
        mma_e4m3(acc, a01, xv[b][s].x, xv[b][s].y);
        const uint32_t a23[4] = {lo[b][s].z, hi[b][s].z, lo[b][s].w, hi[b][s].w};
        mma_e4m3(acc, a23, xv[b][s].z, xv[b][s].w);
      }
      if constexpr (kChannel) continue;
      const float ws = __ldg(w_scale + kb);
      const float s0 = m0 < Mp ? ws * __ldg(a.x_scale + kb * Mp + m0) : 0.0f;
      const float s1 = m1 < Mp ? ws * __ldg(a.x_scale + kb * Mp + m1) : 0.0f;
      total[0] = fmaf(part[0], s0, total[0]);
      total[1] = fmaf(part[1], s1, total[1]);
      total[2] = fmaf(part[2], s0, total[2]);
      total[3] = fmaf(part[3], s1, total[3]);
    }
  }
  // The warps' totals added in shared memory, then written by warp 0.
  __shared__ float sums[kMmaWarps][32][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) sums[warp][lane][i] = total[i];
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kMmaWarps; ++w) v += sums[w][lane][i];
    const int64_t n = n0 + g + (i >= 2 ? 8 : 0);
    const int64_t m = (i & 1) ? m1 : m0;
    if (n >= a.N || m >= a.M) continue;
    if constexpr (kChannel) v *= __ldg(w_scale + n) * __ldg(a.x_scale + m);
    store(static_cast<OutT*>(a.y), m * a.N + n, v);
  }
}

template <int kDepth, bool kChannel>
void launch_mma(const Fp8GemvArgs& a, unsigned blocks, cudaStream_t stream) {
  if (a.y_bf16)
    pdl::launch(fp8_gemv_mma_kernel<__nv_bfloat16, kDepth, kChannel>, blocks, kMmaWarps * 32, 0, stream, a);
  else
    pdl::launch(fp8_gemv_mma_kernel<float, kDepth, kChannel>, blocks, kMmaWarps * 32, 0, stream, a);
}

template <int kDepth>
void launch_mma(const Fp8GemvArgs& a, unsigned blocks, cudaStream_t stream) {
  if (a.channel)
    launch_mma<kDepth, true>(a, blocks, stream);
  else
    launch_mma<kDepth, false>(a, blocks, stream);
}

std::atomic<int> g_mma_depth{0};  // 0: not read from FP8RL_GEMV_DEPTH yet

template <int M, int R>
void launch(const Fp8GemvArgs& a, cudaStream_t stream) {
  const int64_t warps = (a.N + R - 1) / R;
  const auto blocks = static_cast<unsigned>((warps * 32 + kThreads - 1) / kThreads);
  if (a.y_bf16)
    pdl::launch(fp8_gemv_kernel<M, R, __nv_bfloat16>, blocks, kThreads, 0, stream, a);
  else
    pdl::launch(fp8_gemv_kernel<M, R, float>, blocks, kThreads, 0, stream, a);
}

template <int M>
void launch_rows(const Fp8GemvArgs& a, cudaStream_t stream) {
  // Two rows per warp halve the activation reads where there are warps enough to fill the GPU
  // twice over; one row per warp keeps small N spread over more warps.
  if (a.N >= 2048)
    launch<M, 2>(a, stream);
  else
    launch<M, 1>(a, stream);
}

}  // namespace

int fp8_gemv_mma_depth() {
  int d = g_mma_depth.load(std::memory_order_relaxed);
  if (d == 0) {
    d = env_int("FP8RL_GEMV_DEPTH", 2, 3).value_or(3);
    g_mma_depth.store(d, std::memory_order_relaxed);
  }
  return d;
}

void set_fp8_gemv_mma_depth(int depth) {
  if (depth < 2 || depth > 3) throw std::invalid_argument("set_fp8_gemv_mma_depth: 2 or 3, got " + std::to_string(depth));
  g_mma_depth.store(depth, std::memory_order_relaxed);
}

void fp8_gemv_block_mma(const Fp8GemvArgs& a, cudaStream_t stream) {
  if (a.M < 1 || a.M > kFp8GemvMmaMaxRows || a.Kp % (a.channel ? 128 : 512) != 0 || a.Np % 128 != 0 || a.N > a.Np ||
      a.Mp < a.M)
    throw std::runtime_error("fp8_gemv_block_mma: unsupported shape M=" + std::to_string(a.M) +
                             " N=" + std::to_string(a.N) + " Kp=" + std::to_string(a.Kp));
  const auto blocks = static_cast<unsigned>((a.N + 15) / 16);
  if (fp8_gemv_mma_depth() == 2)
    launch_mma<2>(a, blocks, stream);
  else
    launch_mma<3>(a, blocks, stream);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("fp8_gemv_block_mma: ") + cudaGetErrorString(err));
}

void fp8_gemv_block(const Fp8GemvArgs& a, cudaStream_t stream) {
  if (a.channel) throw std::runtime_error("fp8_gemv_block: block x group scaling only (channel: fp8_gemv_block_mma)");
  if (a.M < 1 || a.M > kFp8GemvMaxRows || a.Kp % 512 != 0 || a.Np % 128 != 0 || a.N > a.Np || a.Mp < a.M)
    throw std::runtime_error("fp8_gemv_block: unsupported shape M=" + std::to_string(a.M) + " N=" + std::to_string(a.N) +
                             " Kp=" + std::to_string(a.Kp));
  switch (a.M) {
    case 1: launch_rows<1>(a, stream); break;
    case 2: launch_rows<2>(a, stream); break;
    case 3: launch_rows<3>(a, stream); break;
    default: launch_rows<4>(a, stream); break;
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("fp8_gemv_block: ") + cudaGetErrorString(err));
}

}  // namespace fp8rl::cuda
