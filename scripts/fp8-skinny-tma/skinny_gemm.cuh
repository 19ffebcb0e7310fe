// A block-scaled FP8 GEMM for decode sizes (Mp <= 64 tokens, a multiple of 4), built the way
// DeepGEMM builds its kernels, with one thing CUTLASS's cannot do: the first weight tiles are
// requested BEFORE the dependent-launch wait (core/util/pdl.cuh), so under PDL the weight stream
// starts while the kernel before (the quantization of x) still runs.
//
// y [Mp, Np] bf16 = x [Mp, Kp] . w [Np, Kp]^T, E4M3, with 1x128 activation groups (x_scale
// [Kp/128, Mp]) and 128x128 weight blocks (w_scale [Np/128, Kp/128]): fp8_gemm's layouts.
//
// One CTA computes a tile of kWRows weight rows x kXRows token rows over all of K:
//   - a producer warp (one lane) streams 128-wide K blocks of w and x through a ring of kStages
//     shared-memory stages with TMA (128-byte swizzle, the layout wgmma reads; rows of x past Mp
//     arrive as zeros), plus the block's row of x_scale (a bulk copy); mbarriers count the bytes
//     in (`full`) and the consumers out (`empty`);
//   - kGroups consumer warpgroups take the K blocks round-robin; each runs four wgmma m64nNk32
//     (E4M3 x E4M3 -> f32) into fresh registers, then adds them times w_scale * x_scale[token]
//     into its float totals (the per-block promotion cuBLASLt and DeepGEMM do). Several groups
//     keep several of these MMA + promotion chains in flight on an SM: one alone is latency-bound;
//   - at the end the groups' totals are summed through shared memory and written as bf16.
// Two orientations: plain, the tokens are the MMA's 64-row M side and 16-64 weight rows its N
// side (fine-grained tiles: N / 32 CTAs); kSwap, 64 weight rows are its M side and the tokens,
// padded to 16, 32 or 64, its N side (CUTLASS's orientation: little shared memory spent on x, so
// a deeper ring of weights).
// No split across CTAs, so the result is deterministic. Needs sm_90a (wgmma, TMA). Used by the
// harness beside it only: its best (swapped to M = 16, plain 32 rows x 2 groups at 64) is about
// CUTLASS's speed, and a first engine rule with poorer tiles ran slower (docs/BENCHMARKS.md).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/util/pdl.cuh"

namespace fp8rl::cuda::tma_gemm {

constexpr int kBlockK = 128;  // K bytes per stage: one scale block
constexpr int kMmaM = 64;     // wgmma's M side: the token rows (plain) or the weight rows (kSwap)

// kGroups consumer warpgroups split a CTA's K blocks round-robin (block kb goes to group
// kb % kGroups), so that several MMA + promotion chains run at once on an SM; one producer warp.
template <int kGroups>
constexpr int kThreadsFor = 128 * kGroups + 32;

// A CTA's tile: kWRows weight rows x kXRows token rows. Plain: tokens are the MMA's M side
// (kXRows = 64, rows past Mp zero-filled) and kWRows (16, 32, 64) its N side. kSwap: weight rows
// are its M side (kWRows = 64) and kXRows (16, 32, 64 >= Mp) tokens its N side, so a small batch
// fills less shared memory and the ring holds more weight bytes.
template <int kWRows, int kXRows, int kStages>
struct alignas(1024) Smem {
  static constexpr uint32_t kTileBytes = (kWRows + kXRows) * kBlockK;
  uint8_t w[kStages][kWRows * kBlockK];  // 2-8 KB a stage; 1024-aligned (the 128-byte swizzle's atom)
  uint8_t x[kStages][kXRows * kBlockK];  // 2-8 KB a stage
  float x_scale[kStages][64];            // the stage's row of x_scale (Mp floats of it)
  float w_scale[1024];                   // this CTA's 128-row block of w_scale: K / 128 floats (K <= 128K)
  uint64_t full[kStages];                // TMA bytes landed
  uint64_t empty[kStages];               // consumers done with the stage
};
template <int kWRows, int kXRows, int kStages>
constexpr size_t kSmemBytes = sizeof(Smem<kWRows, kXRows, kStages>) + 1024;  // + room to align the dynamic base

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}

// One box of a 2D tensor map (coordinates: K byte, row) into shared memory, counted on `bar`.
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, int k, int row) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::"r"(
          smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(k), "r"(row)
      : "memory");
}


// wgmma shared-memory descriptor of a K-major tile in 128-byte swizzle: rows of 128 bytes, 8-row
// atoms 1024 bytes apart (stride byte offset); the leading byte offset is unused for this layout.
__device__ __forceinline__ uint64_t sw128_desc(const void* tile) {
  const uint64_t addr = smem_addr(tile);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// d (+)= a . b^T over 32 K bytes: a 64 x 32 (tokens), b N x 32 (weight rows), both K-major.
__device__ __forceinline__ void wgmma_k32(float (&d)[8], uint64_t a, uint64_t b, int accumulate) {  // N = 16
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_k32(float (&d)[16], uint64_t a, uint64_t b, int accumulate) {  // N = 32
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_k32(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {  // N = 64
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(accumulate));
}
// Keeps the compiler from moving reads of the accumulators across the asynchronous MMA's wait.
template <int R>
__device__ __forceinline__ void fence_regs(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

struct Args {
  const float* w_scale;  // [N/128, K/128]
  const float* x_scale;  // [K/128, M]
  __nv_bfloat16* y;      // [M, N]
  int M, N, K;           // M a multiple of 4 (x_scale rows are copied in 16-byte units)
};

// A 1D bulk copy of `bytes` (a multiple of 16, both addresses 16-aligned) counted on `bar`.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
__device__ __forceinline__ void consumers_sync(int threads) {  // named barrier 1: the consumer warpgroups only
  asm volatile("bar.sync 1, %0;" ::"r"(threads) : "memory");
}

template <int kWRows, int kXRows, int kStages, int kGroups, bool kSwap>
__global__ void __launch_bounds__(kThreadsFor<kGroups>, 1)
    skinny_kernel(const __grid_constant__ CUtensorMap wmap, const __grid_constant__ CUtensorMap xmap, const Args a) {
  static_assert((kSwap ? kWRows : kXRows) == kMmaM, "the MMA's M side is 64 rows");
  constexpr int kN = kSwap ? kXRows : kWRows;  // the MMA's N side
  constexpr int kRegs = kN / 2;                 // accumulators a thread: 64 x kN / 128
  constexpr int kConsumers = 128 * kGroups;
  extern __shared__ uint8_t raw[];
  using S = Smem<kWRows, kXRows, kStages>;
  S& s = *reinterpret_cast<S*>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t{1023});
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n0 = blockIdx.x * kWRows, kblocks = a.K / kBlockK;
  const uint32_t xs_bytes = static_cast<uint32_t>(a.M) * 4;
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) {
      mbar_init(&s.full[i], 1);
      mbar_init(&s.empty[i], 128);  // one warpgroup consumes a stage
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warp == kConsumers / 32) {  // the producer warp; one lane issues every copy
    if (lane != 0) return;
    const int first = kblocks < kStages ? kblocks : kStages;
    // Weights are never written by the grid before this one: load them before waiting for it.
    for (int kb = 0; kb < first; ++kb) {
      mbar_expect_tx(&s.full[kb], S::kTileBytes + xs_bytes);
      tma_load(s.w[kb], &wmap, &s.full[kb], kb * kBlockK, n0);
    }
    pdl::wait();  // x and x_scale are the previous grid's output
    for (int kb = 0; kb < first; ++kb) {
      tma_load(s.x[kb], &xmap, &s.full[kb], kb * kBlockK, 0);
      bulk_load(s.x_scale[kb], a.x_scale + static_cast<size_t>(kb) * a.M, xs_bytes, &s.full[kb]);
    }
    for (int kb = first; kb < kblocks; ++kb) {
      const int st = kb % kStages;
      mbar_wait(&s.empty[st], ((kb / kStages) - 1) & 1);
      mbar_expect_tx(&s.full[st], S::kTileBytes + xs_bytes);
      tma_load(s.w[st], &wmap, &s.full[st], kb * kBlockK, n0);
      tma_load(s.x[st], &xmap, &s.full[st], kb * kBlockK, 0);
      bulk_load(s.x_scale[st], a.x_scale + static_cast<size_t>(kb) * a.M, xs_bytes, &s.full[st]);
    }
    return;
  }

  // Consumers. Accumulator fragment of wgmma m64nNk (PTX ISA): d[4j + i] is the MMA's row
  // 16 (warp % 4) + lane / 4 (+ 8 for i >= 2) and column 8 j + 2 (lane % 4) + (i % 2); a token
  // and a weight row, in the orientation's order.
  const int group = warp / 4, gwarp = warp % 4;
  const int mrow = gwarp * 16 + lane / 4;
  auto token_of = [&](int reg) {
    return kSwap ? 8 * (reg / 4) + 2 * (lane % 4) + (reg % 2) : mrow + 8 * ((reg / 2) % 2);
  };
  auto wrow_of = [&](int reg) {
    return kSwap ? mrow + 8 * ((reg / 2) % 2) : 8 * (reg / 4) + 2 * (lane % 4) + (reg % 2);
  };
  float total[kRegs];
#pragma unroll
  for (int i = 0; i < kRegs; ++i) total[i] = 0.0f;
  // This CTA's weight scales into shared memory (plain loads: a row of them need not be 16-byte
  // aligned), before the wait like the weights.
  const float* w_scale_row = a.w_scale + static_cast<size_t>(n0 / 128) * kblocks;
  for (int i = threadIdx.x; i < kblocks; i += kConsumers) s.w_scale[i] = w_scale_row[i];
  consumers_sync(kConsumers);
  for (int kb = group; kb < kblocks; kb += kGroups) {
    const int st = kb % kStages;
    mbar_wait(&s.full[st], (kb / kStages) & 1);
    float part[kRegs];
#pragma unroll
    for (int i = 0; i < kRegs; ++i) part[i] = 0.0f;
    fence_regs(part);
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
    const uint64_t dw = sw128_desc(s.w[st]), dx = sw128_desc(s.x[st]);
    const uint64_t da = kSwap ? dw : dx, db = kSwap ? dx : dw;
#pragma unroll
    for (int k = 0; k < kBlockK / 32; ++k) wgmma_k32(part, da + 2 * k, db + 2 * k, k);  // +32 bytes of K
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    // The scales are read while the MMAs run (a token's scale per register pair: 2 a thread
    // plain, kN / 4 swapped); tokens past M have none (their x rows are TMA's zeros).
    const float w_s = s.w_scale[kb];
    float sc[kSwap ? kN / 4 : 2];
#pragma unroll
    for (int q = 0; q < (kSwap ? kN / 4 : 2); ++q) {
      // Scale q serves registers 4j + i with q = 2j + i % 2 (swapped) or q = i / 2 (plain); its
      // token is that of the first of them.
      const int t = token_of(kSwap ? 4 * (q / 2) + q % 2 : 2 * q);
      sc[q] = t < a.M ? w_s * s.x_scale[st][t] : 0.0f;
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    fence_regs(part);
    mbar_arrive(&s.empty[st]);
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      // Registers 4j + i: plain, the token follows i / 2; swapped, it follows j and i % 2.
      const int q = kSwap ? 2 * (r / 4) + (r % 2) : (r / 2) % 2;
      total[r] = fmaf(part[r], sc[q], total[r]);
    }
  }
  pdl::launch_dependents();  // the next grid may launch; it waits for this one's completion before reading y
  if constexpr (kGroups > 1) {
    // Groups 1.. hand their sums to group 0 through the weight ring, free once every group is
    // past its last stage (every load issued has then landed and been read).
    static_assert(sizeof(S::w) >= (kGroups - 1) * kRegs * 128 * sizeof(float), "weight ring too small to reduce in");
    float* red = reinterpret_cast<float*>(&s.w[0][0]);  // [kGroups - 1][kRegs][128 threads]
    const int t = threadIdx.x % 128;
    consumers_sync(kConsumers);
    if (group > 0) {
#pragma unroll
      for (int i = 0; i < kRegs; ++i) red[((group - 1) * kRegs + i) * 128 + t] = total[i];
    }
    consumers_sync(kConsumers);
    if (group > 0) return;
    for (int g = 0; g < kGroups - 1; ++g) {
#pragma unroll
      for (int i = 0; i < kRegs; ++i) total[i] += red[(g * kRegs + i) * 128 + t];
    }
  }
  if constexpr (!kSwap) {
    // Pairs of neighbouring weight rows: one bf16x2 store each.
#pragma unroll
    for (int r = 0; r < kRegs; r += 2) {
      const int t = token_of(r), n = n0 + wrow_of(r);
      if (t < a.M && n < a.N)
        *reinterpret_cast<__nv_bfloat162*>(a.y + static_cast<size_t>(t) * a.N + n) =
            __floats2bfloat162_rn(total[r], total[r + 1]);
    }
  } else {
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      const int t = token_of(r), n = n0 + wrow_of(r);
      if (t < a.M && n < a.N) a.y[static_cast<size_t>(t) * a.N + n] = __float2bfloat16_rn(total[r]);
    }
  }
}

// A K-major [rows, k_bytes] E4M3 matrix read in boxes of 128 K bytes x box_rows rows, 128-byte
// swizzled (the layout wgmma reads); rows past the end read as zeros.
inline CUresult k_major_map(CUtensorMap* map, const void* base, uint64_t rows, uint64_t k_bytes, uint32_t box_rows) {
  const cuuint64_t dims[2] = {k_bytes, rows};
  const cuuint64_t strides[1] = {k_bytes};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kBlockK), box_rows};
  const cuuint32_t elem[2] = {1, 1};
  return cuTensorMapEncodeTiled(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims,
                                            strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);  // rows past the end read as 0
}


template <int kWRows, int kXRows, int kStages, int kGroups, bool kSwap>
cudaError_t launch(const CUtensorMap& wmap, const CUtensorMap& xmap, const Args& a, bool pdl, cudaStream_t stream) {
  constexpr auto kernel = skinny_kernel<kWRows, kXRows, kStages, kGroups, kSwap>;
  constexpr size_t smem = kSmemBytes<kWRows, kXRows, kStages>;
  static const cudaError_t sized =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (sized != cudaSuccess) return sized;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(a.N / kWRows));
  cfg.blockDim = dim3(kThreadsFor<kGroups>);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, wmap, xmap, a);
}

}  // namespace fp8rl::cuda::tma_gemm
