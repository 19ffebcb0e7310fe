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
#include "core/model/cuda/cp_async.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cooperative_groups.h>

#include <algorithm>
#include <stdexcept>
#include <string>

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
// into the tensor cores as loaded, with no conversion. Fragment layout of m16n8k32 for 8-bit A/B
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

template <typename OutT>
__global__ void __launch_bounds__(kMmaWarps * 32) fp8_gemv_mma_kernel(Fp8GemvArgs a) {
  const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
  const int g = lane >> 2, t = lane & 3;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * 16;  // this block's 16 weight rows
  const int64_t Kp = a.Kp, Mp = a.Mp, kblocks = Kp >> 7;
  const uint8_t* w_lo = a.w + (n0 + g) * Kp + 16 * t;   // row g
  const uint8_t* w_hi = w_lo + 8 * Kp;                   // row g + 8
  const bool x_row = g < Mp;                             // activation rows past Mp are zeros
  const uint8_t* x = a.x + (x_row ? g : 0) * Kp + 16 * t;
  const float* w_scale = a.w_scale + (n0 >> 7) * kblocks;
  // Activation columns of this lane's accumulators: c0/c2 -> m = 2t, c1/c3 -> m = 2t + 1.
  const int m0 = 2 * t, m1 = 2 * t + 1;
  float total[4] = {0.0f, 0.0f, 0.0f, 0.0f};

  // Two K blocks per iteration, all 12 loads issued before the first mma: each lane keeps 192
  // bytes in flight.
  for (int64_t kb0 = warp; kb0 < kblocks; kb0 += 2 * kMmaWarps) {
    const bool second = kb0 + kMmaWarps < kblocks;
    uint4 lo[2][2], hi[2][2], xv[2][2];
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      if (b == 1 && !second) break;
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int64_t k = (kb0 + b * kMmaWarps) * 128 + 64 * s;
        lo[b][s] = __ldcs(reinterpret_cast<const uint4*>(w_lo + k));
        hi[b][s] = __ldcs(reinterpret_cast<const uint4*>(w_hi + k));
        xv[b][s] = x_row ? __ldg(reinterpret_cast<const uint4*>(x + k)) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      if (b == 1 && !second) break;
      const int64_t kb = kb0 + b * kMmaWarps;
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const uint32_t a01[4] = {lo[b][s].x, hi[b][s].x, lo[b][s].y, hi[b][s].y};
        mma_e4m3(part, a01, xv[b][s].x, xv[b][s].y);
        const uint32_t a23[4] = {lo[b][s].z, hi[b][s].z, lo[b][s].w, hi[b][s].w};
        mma_e4m3(part, a23, xv[b][s].z, xv[b][s].w);
      }
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
    if (n < a.N && m < a.M) store(static_cast<OutT*>(a.y), m * a.N + n, v);
  }
}

// ---- Skinny GEMM: up to 64 activation rows, fp16 tensor cores, K split across a cluster ------
//
// At M = 9-64 cuBLASLt's block-scaled kernels read the weights at ~1.2-2.9 TB/s on an H200
// (BF16 GEMMs reach 2.5-3.5 TB/s there), so FP8 decode at batch 16-64 was only 1.1-1.2x BF16
// where the bytes say 2x. This kernel keeps the GEMV's layout (weight rows on the mma's M side;
// each lane's 16 contiguous bytes of a 64-wide K chunk feed its fragments as they lie) and
// changes the rest, since x now has up to 64 rows:
//   - Hopper has no FP8 mma.sync: ptxas expands each m16n8k32 E4M3 mma into two fp16
//     m16n8k16 mmas plus the conversion of all their operands (the SASS shows F2FP.E4M3.UNPACK
//     before every HMMA.16816), so an E4M3 mma per x tile converts the same weights NT times.
//     Here the conversions are explicit and done once: each K block's weight fragments are
//     widened in registers once per warp, and each x tile once per CTA into an fp16 copy in
//     shared memory; then fp16 m16n8k16 mmas (fp32 accumulation). E4M3 -> fp16 is exact, so the
//     products are the FP8 product's;
//   - a CTA owns 128 weight rows (one row of 128x128 scale blocks; warp w its rows 16w..16w+15)
//     and a range of K blocks. Each K block's weight tile [128, 128] and x tile [NT*8, 128]
//     (plus x's scales) are copied into shared memory by cp.async, kSkinnyStages - 1 K blocks
//     ahead: up to 48 KB of weights in flight per CTA without holding registers (a first
//     version loaded them into registers one block ahead and read ~1.4 TB/s at M = 1), and x is
//     read from L2 once per CTA for all 8 warps;
//   - each K block's partial sums are promoted with both scales (as the GEMV and DeepGEMM do);
//   - when the 128-row tiles alone do not fill the GPU (N = 4096 gives 32 of them), K is split S
//     ways (S <= 8) across the CTAs of one thread-block cluster. Each CTA leaves its [NT*8, 128]
//     float partials in its shared memory and, after a cluster barrier, sums 1/S of the tile
//     over the S CTAs through distributed shared memory (16-byte loads, all S issued before
//     the adds), in rank order: no global workspace, no atomics, the same bits on every run.
// fp8 tiles have 128-byte rows; 16-byte chunk q of row r sits at chunk q ^ 4 (r & 1), so the 8
// lanes of a quarter-warp (rows g, g + 1; chunks 4s + t) hit 8 different bank groups. The fp16
// x copy has 256-byte rows, chunk c of row r at c ^ (r & 1), for the same reason.
constexpr int kSkinnyWarps = 8;
constexpr int kSkinnyThreads = kSkinnyWarps * 32;
constexpr int kSkinnyStages = 3;  // 2 CTAs per SM fit in shared memory at NT = 8
constexpr int kSkinnyMaxSplit = 8;     // the portable cluster size
constexpr int kSkinnyRedStride = 132;  // floats per partial row: 128 + 4, conflict-free writes

template <int NT>
struct SkinnySmem {
  static constexpr int kRows = NT * 8;                         // x rows staged
  static constexpr int kStageBytes = 128 * 128 + kRows * 128;  // fp8 weight tile + fp8 x tile
  static constexpr int kTileBytes = kSkinnyStages * kStageBytes;
  static constexpr int kScaleBytes = kSkinnyStages * kRows * 4;  // x scales, after the tiles
  static constexpr int kHalfBytes = kRows * 256;                 // fp16 x of the current block
  static constexpr int kLoopBytes = kTileBytes + kScaleBytes + kHalfBytes;
  static constexpr int kRedBytes = kRows * kSkinnyRedStride * 4;  // partials, after the loop
  static constexpr int kBytes = kLoopBytes > kRedBytes ? kLoopBytes : kRedBytes;
};

// Two E4M3 bytes (the low 16 bits of v, low byte first) -> fp16x2, exact.
__device__ __forceinline__ uint32_t e4m3x2_to_half2(uint32_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v & 0xFFFFu), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
}

__device__ __forceinline__ void mma_f16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Byte offset of 16-byte chunk q of row r in a tile of 128-byte rows (the swizzle above).
__device__ __forceinline__ int swizzled(int r, int q) { return r * 128 + ((q ^ ((r & 1) << 2)) << 4); }

template <int NT, typename OutT>
__global__ void __launch_bounds__(kSkinnyThreads, 2) fp8_skinny_mma_kernel(Fp8GemvArgs a, int kb_per_split) {
  using Smem = SkinnySmem<NT>;
  extern __shared__ __align__(16) uint8_t smem[];
  float* s_ring = reinterpret_cast<float*>(smem + Smem::kTileBytes);  // [stage][x row]
  uint8_t* xh = smem + Smem::kTileBytes + Smem::kScaleBytes;          // [x row][128] fp16
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank()), splits = static_cast<int>(cluster.num_blocks());

  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int64_t Kp = a.Kp, Mp = a.Mp, kblocks = Kp >> 7;
  const int64_t tile0 = static_cast<int64_t>(blockIdx.y) * 128;  // this CTA's 128 weight rows
  const int64_t kb_begin = static_cast<int64_t>(rank) * kb_per_split;
  const int count = static_cast<int>(min(static_cast<int64_t>(kb_per_split), kblocks - kb_begin));  // >= 1
  const float* w_scale = a.w_scale + blockIdx.y * kblocks;

  // Stage K block kb_begin + j: the weight tile, the x tile (rows past Mp as zeros), x's scales.
  auto stage = [&](int j) {
    const int64_t k0 = (kb_begin + j) * 128;
    uint8_t* ws = smem + (j % kSkinnyStages) * Smem::kStageBytes;
    uint8_t* xs = ws + 128 * 128;
#pragma unroll
    for (int c = tid; c < 128 * 8; c += kSkinnyThreads) {
      const int r = c >> 3, q = c & 7;
      cp_async16(ws + swizzled(r, q), a.w + (tile0 + r) * Kp + k0 + q * 16);
    }
#pragma unroll
    for (int c = tid; c < Smem::kRows * 8; c += kSkinnyThreads) {
      const int r = c >> 3, q = c & 7;
      const bool valid = r < Mp;
      cp_async16_zfill(xs + swizzled(r, q), a.x + (valid ? r * Kp + k0 + q * 16 : 0), valid);
    }
    if (tid < Smem::kRows) {
      const bool valid = tid < Mp;
      cp_async4_zfill(s_ring + (j % kSkinnyStages) * Smem::kRows + tid, a.x_scale + (valid ? (k0 >> 7) * Mp + tid : 0),
                      valid);
    }
  };

  float total[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) total[n][i] = 0.0f;

#pragma unroll
  for (int j = 0; j < kSkinnyStages - 1; ++j) {
    if (j < count) stage(j);
    cp_async_commit();
  }
  for (int j = 0; j < count; ++j) {
    cp_async_wait<kSkinnyStages - 2>();  // this thread's copies of block j have landed ...
    __syncthreads();  // ... and everyone's; slot (j - 1) % stages and the fp16 x are free again
    if (j + kSkinnyStages - 1 < count) stage(j + kSkinnyStages - 1);
    cp_async_commit();  // possibly empty: the group count stays uniform
    const uint8_t* ws = smem + (j % kSkinnyStages) * Smem::kStageBytes;
    const uint8_t* xs = ws + 128 * 128;
    const float* ss = s_ring + (j % kSkinnyStages) * Smem::kRows;
    // x tile -> fp16, once for the CTA: fp8 chunk q (16 K values) of row r becomes fp16 chunks
    // 2q, 2q + 1.
#pragma unroll
    for (int c = tid; c < Smem::kRows * 8; c += kSkinnyThreads) {
      const int r = c >> 3, q = c & 7;
      const uint4 v = *reinterpret_cast<const uint4*>(xs + swizzled(r, q));
      const uint4 lo = make_uint4(e4m3x2_to_half2(v.x), e4m3x2_to_half2(v.x >> 16), e4m3x2_to_half2(v.y),
                                  e4m3x2_to_half2(v.y >> 16));
      const uint4 hi = make_uint4(e4m3x2_to_half2(v.z), e4m3x2_to_half2(v.z >> 16), e4m3x2_to_half2(v.w),
                                  e4m3x2_to_half2(v.w >> 16));
      *reinterpret_cast<uint4*>(xh + r * 256 + (((2 * q) ^ (r & 1)) << 4)) = lo;
      *reinterpret_cast<uint4*>(xh + r * 256 + (((2 * q + 1) ^ (r & 1)) << 4)) = hi;
    }
    __syncthreads();
    const float wsc = __ldg(w_scale + kb_begin + j);
    // A partial per x tile: the NT tiles' mma chains are independent, so the tensor pipe overlaps
    // them.
    float part[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) part[n][i] = 0.0f;
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      // This lane's 16 weight bytes of rows g and g + 8 at K chunk 4s + t, widened: word u of
      // each (K values 4u..4u+3) is the u-th m16n8k16's k-slots {2t, 2t+1} (a0/a1) and
      // {2t+8, 2t+9} (a2/a3); the x fragments below take the same 4 values, so the dot
      // products see each K term exactly once.
      const uint4 lo = *reinterpret_cast<const uint4*>(ws + swizzled(16 * warp + g, 4 * s + t));
      const uint4 hi = *reinterpret_cast<const uint4*>(ws + swizzled(16 * warp + g + 8, 4 * s + t));
      const uint32_t lw[4] = {lo.x, lo.y, lo.z, lo.w}, hw[4] = {hi.x, hi.y, hi.z, hi.w};
      uint32_t af[4][4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        af[u][0] = e4m3x2_to_half2(lw[u]);
        af[u][1] = e4m3x2_to_half2(hw[u]);
        af[u][2] = e4m3x2_to_half2(lw[u] >> 16);
        af[u][3] = e4m3x2_to_half2(hw[u] >> 16);
      }
      const int q = 4 * s + t;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int r = 8 * n + g;
        const uint4 b0 = *reinterpret_cast<const uint4*>(xh + r * 256 + (((2 * q) ^ (r & 1)) << 4));
        const uint4 b1 = *reinterpret_cast<const uint4*>(xh + r * 256 + (((2 * q + 1) ^ (r & 1)) << 4));
        mma_f16(part[n], af[0], b0.x, b0.y);
        mma_f16(part[n], af[1], b0.z, b0.w);
        mma_f16(part[n], af[2], b1.x, b1.y);
        mma_f16(part[n], af[3], b1.z, b1.w);
      }
    }
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      const float s0 = wsc * ss[8 * n + 2 * t], s1 = wsc * ss[8 * n + 2 * t + 1];
      total[n][0] = fmaf(part[n][0], s0, total[n][0]);
      total[n][1] = fmaf(part[n][1], s1, total[n][1]);
      total[n][2] = fmaf(part[n][2], s0, total[n][2]);
      total[n][3] = fmaf(part[n][3], s1, total[n][3]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the tiles: the space becomes the partials buffer

  // Partials [NT*8 x rows][128 weight rows] (row stride kSkinnyRedStride), in this CTA's smem.
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i)
      red[(8 * n + 2 * t + (i & 1)) * kSkinnyRedStride + 16 * warp + g + (i >= 2 ? 8 : 0)] = total[n][i];
  cluster.sync();  // every CTA's partials are written

  // CTA `rank` sums its share of the tile's outputs (4 at a time) over the S CTAs, in rank order.
  constexpr int kQuads = Smem::kRows * 128 / 4;
  const int share = (kQuads + splits - 1) / splits;
  const int end = min(kQuads, (rank + 1) * share);
  OutT* y = static_cast<OutT*>(a.y);
  for (int e = rank * share + tid; e < end; e += kSkinnyThreads) {
    const int m = (4 * e) >> 7, nl = (4 * e) & 127;
    if (m >= a.M || tile0 + nl >= a.N) continue;
    float4 p[kSkinnyMaxSplit];
#pragma unroll
    for (int q = 0; q < kSkinnyMaxSplit; ++q)
      if (q < splits) p[q] = *reinterpret_cast<const float4*>(cluster.map_shared_rank(red, q) + m * kSkinnyRedStride + nl);
    float4 v = p[0];
#pragma unroll
    for (int q = 1; q < kSkinnyMaxSplit; ++q)
      if (q < splits) v.x += p[q].x, v.y += p[q].y, v.z += p[q].z, v.w += p[q].w;
    const float vs[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (tile0 + nl + i < a.N) store(y, m * a.N + tile0 + nl + i, vs[i]);
  }
  cluster.sync();  // no CTA's shared memory goes away while another still reads it
}

template <int M, int R>
void launch(const Fp8GemvArgs& a, cudaStream_t stream) {
  const int64_t warps = (a.N + R - 1) / R;
  const auto blocks = static_cast<unsigned>((warps * 32 + kThreads - 1) / kThreads);
  if (a.y_bf16)
    fp8_gemv_kernel<M, R, __nv_bfloat16><<<blocks, kThreads, 0, stream>>>(a);
  else
    fp8_gemv_kernel<M, R, float><<<blocks, kThreads, 0, stream>>>(a);
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

template <int NT>
void launch_skinny(const Fp8GemvArgs& a, int splits, int kb_per_split, cudaStream_t stream) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(splits), static_cast<unsigned>(a.Np / 128), 1);
  cfg.blockDim = dim3(kSkinnyThreads, 1, 1);
  cfg.dynamicSmemBytes = SkinnySmem<NT>::kBytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(splits);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  // Above 48 KB a kernel must opt in (once per instantiation; not a stream operation, so allowed
  // while a CUDA graph is being captured).
  static const cudaError_t opt_in = [] {
    const cudaError_t e = cudaFuncSetAttribute(fp8_skinny_mma_kernel<NT, __nv_bfloat16>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, SkinnySmem<NT>::kBytes);
    return e != cudaSuccess ? e
                            : cudaFuncSetAttribute(fp8_skinny_mma_kernel<NT, float>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, SkinnySmem<NT>::kBytes);
  }();
  if (opt_in != cudaSuccess) throw std::runtime_error(std::string("fp8_skinny_mma: ") + cudaGetErrorString(opt_in));
  cudaError_t err = a.y_bf16 ? cudaLaunchKernelEx(&cfg, fp8_skinny_mma_kernel<NT, __nv_bfloat16>, a, kb_per_split)
                             : cudaLaunchKernelEx(&cfg, fp8_skinny_mma_kernel<NT, float>, a, kb_per_split);
  if (err != cudaSuccess) throw std::runtime_error(std::string("fp8_skinny_mma: ") + cudaGetErrorString(err));
}

}  // namespace

void fp8_gemv_block_mma(const Fp8GemvArgs& a, cudaStream_t stream) {
  if (a.M < 1 || a.M > kFp8GemvMmaMaxRows || a.Kp % 512 != 0 || a.Np % 128 != 0 || a.N > a.Np || a.Mp < a.M)
    throw std::runtime_error("fp8_gemv_block_mma: unsupported shape M=" + std::to_string(a.M) +
                             " N=" + std::to_string(a.N) + " Kp=" + std::to_string(a.Kp));
  const auto blocks = static_cast<unsigned>((a.N + 15) / 16);
  if (a.y_bf16)
    fp8_gemv_mma_kernel<__nv_bfloat16><<<blocks, kMmaWarps * 32, 0, stream>>>(a);
  else
    fp8_gemv_mma_kernel<float><<<blocks, kMmaWarps * 32, 0, stream>>>(a);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("fp8_gemv_block_mma: ") + cudaGetErrorString(err));
}

void fp8_gemv_block(const Fp8GemvArgs& a, cudaStream_t stream) {
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

Fp8SkinnySplit fp8_skinny_split(int64_t Np, int64_t Kp, int sm_count) {
  // Split K as far as the 128-row tiles x splits still fit one wave of two CTAs per SM (a second,
  // partial wave would cost as much as the first), without giving a split less than one K block;
  // then even out the blocks per split.
  const int64_t tiles = Np / 128, kblocks = Kp / 128;
  int64_t splits = 2 * static_cast<int64_t>(sm_count) / tiles;
  splits = std::max<int64_t>(1, std::min<int64_t>({splits, kSkinnyMaxSplit, kblocks}));
  const int64_t per = (kblocks + splits - 1) / splits;
  return {static_cast<int>((kblocks + per - 1) / per), static_cast<int>(per)};
}

void fp8_skinny_mma(const Fp8GemvArgs& a, int sm_count, cudaStream_t stream) {
  if (a.M < 1 || a.M > kFp8SkinnyMaxRows || a.Kp % 128 != 0 || a.Kp == 0 || a.Np % 128 != 0 || a.N > a.Np ||
      a.Mp < a.M)
    throw std::runtime_error("fp8_skinny_mma: unsupported shape M=" + std::to_string(a.M) + " N=" + std::to_string(a.N) +
                             " Kp=" + std::to_string(a.Kp));
  const Fp8SkinnySplit sp = fp8_skinny_split(a.Np, a.Kp, sm_count);
  switch ((a.M + 7) / 8) {
    case 1: launch_skinny<1>(a, sp.splits, sp.kb_per_split, stream); break;
    case 2: launch_skinny<2>(a, sp.splits, sp.kb_per_split, stream); break;
    case 3: launch_skinny<3>(a, sp.splits, sp.kb_per_split, stream); break;
    case 4: launch_skinny<4>(a, sp.splits, sp.kb_per_split, stream); break;
    case 5: launch_skinny<5>(a, sp.splits, sp.kb_per_split, stream); break;
    case 6: launch_skinny<6>(a, sp.splits, sp.kb_per_split, stream); break;
    case 7: launch_skinny<7>(a, sp.splits, sp.kb_per_split, stream); break;
    default: launch_skinny<8>(a, sp.splits, sp.kb_per_split, stream); break;
  }
}

}  // namespace fp8rl::cuda
