// A block-scaled FP8 GEMM for decode sizes (M = 1-64 tokens) built the way DeepGEMM builds its
// kernels, to answer one question before it goes near the engine: can a kernel that loads its
// first weight tiles BEFORE the dependent-launch wait, and streams the rest through a TMA ring,
// read weights at close to the copy bandwidth at M = 64, where cuBLASLt / CUTLASS reach ~2.25 TB/s
// and pay ~4 us of ramp per GEMM (CUTLASS's producer waits for the previous grid at the top of its
// mainloop, so nothing streams under the kernel before it; docs/BENCHMARKS.md)?
//
//   bash scripts/fp8-skinny-tma/build.sh && ./fp8_skinny_tma
//
// y [M, N] = x [M, K] . w [N, K]^T with 1x128 activation groups (x_scale [K/128, M]) and 128x128
// weight blocks (w_scale [N/128, K/128]), bf16 out: fp8_gemm's operands and layouts.
//
// One CTA = one consumer warpgroup (128 threads) + one producer warp. A CTA computes a 64-token x
// 32- or 64-weight-row tile over all of K: wgmma m64n32k32 / m64n64k32 (E4M3 x E4M3 -> f32) with
// the tokens as the MMA's M side (TMA zero-fills the rows past M) and the weight rows as its N
// side, so that N / 32 CTAs (128 for o / down, 192 for q/k/v, 768 for gate/up) cover the GPU
// without split-K (64 rows halve the L2 reads of x, which every CTA reads whole). Each stage
// holds one 128-wide K block of both operands (8 KB of x, 4 or 8 KB of w) in 128-byte-swizzled
// shared memory, the layout TMA writes and wgmma reads; the four k32 MMAs of a block accumulate
// into fresh registers, which are then scaled by w_scale * x_scale[row] into float totals (the
// per-block promotion DeepGEMM does). The producer issues the weight loads of the first kStages
// blocks, then waits for the previous grid (griddepcontrol.wait), then the activation loads.
// Tried, each checked and timed: 32 weight rows a CTA with 4, 8 or 16 stages, 64 with 4, 8 or 12.
//
// Checked against cuBLASLt on the same operands (max |diff| relative to max |y|), then timed beside
// it over rotated weight copies (>= 512 MB, so each call reads HBM), and once more behind a small
// kernel that plays the quantizing kernel before each GEMM, launched with and without dependent
// launch. Written without a GPU (twentieth session): nvcc-compiled, not yet run.
#include "../harness_util.cuh"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr int kTileM = 64;     // tokens per CTA (wgmma M); weight rows per CTA (wgmma N): kTileN, 32 or 64
constexpr int kBlockK = 128;   // K bytes per stage: one scale block
constexpr int kConsumers = 128;
constexpr int kThreads = kConsumers + 32;

template <int kTileN, int kStages>
struct alignas(1024) Smem {
  static constexpr uint32_t kStageBytes = (kTileM + kTileN) * kBlockK;
  uint8_t x[kStages][kTileM * kBlockK];  // 8 KB a stage: 1024-aligned (the 128-byte swizzle's atom)
  uint8_t w[kStages][kTileN * kBlockK];  // 4 or 8 KB a stage
  uint64_t full[kStages];                // TMA bytes landed
  uint64_t empty[kStages];               // consumers done with the stage
};
template <int kTileN, int kStages>
constexpr size_t kSmemBytes = sizeof(Smem<kTileN, kStages>) + 1024;  // + room to align the dynamic base

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

__device__ __forceinline__ void grid_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void grid_trigger() { asm volatile("griddepcontrol.launch_dependents;" :::); }

// wgmma shared-memory descriptor of a K-major tile in 128-byte swizzle: rows of 128 bytes, 8-row
// atoms 1024 bytes apart (stride byte offset); the leading byte offset is unused for this layout.
__device__ __forceinline__ uint64_t sw128_desc(const void* tile) {
  const uint64_t addr = smem_addr(tile);
  return ((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// d (+)= a . b^T over 32 K bytes: a 64 x 32 (tokens), b N x 32 (weight rows), both K-major.
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
  int M, N, K;
};

template <int kTileN, int kStages>
__global__ void __launch_bounds__(kThreads, 1)
    skinny_kernel(const __grid_constant__ CUtensorMap wmap, const __grid_constant__ CUtensorMap xmap, const Args a) {
  extern __shared__ uint8_t raw[];
  using S = Smem<kTileN, kStages>;
  constexpr int kRegs = kTileN / 2;  // accumulators a thread: 64 x kTileN / 128
  S& s = *reinterpret_cast<S*>((reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t{1023});
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n0 = blockIdx.x * kTileN, kblocks = a.K / kBlockK;
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) {
      mbar_init(&s.full[i], 1);
      mbar_init(&s.empty[i], kConsumers);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warp == kConsumers / 32) {  // the producer warp; one lane issues every copy
    if (lane != 0) return;
    const int first = kblocks < kStages ? kblocks : kStages;
    // Weights are never written by the grid before this one: load them before waiting for it.
    for (int kb = 0; kb < first; ++kb) {
      mbar_expect_tx(&s.full[kb], S::kStageBytes);
      tma_load(s.w[kb], &wmap, &s.full[kb], kb * kBlockK, n0);
    }
    grid_wait();  // x is the previous grid's output
    for (int kb = 0; kb < first; ++kb) tma_load(s.x[kb], &xmap, &s.full[kb], kb * kBlockK, 0);
    for (int kb = first; kb < kblocks; ++kb) {
      const int st = kb % kStages;
      mbar_wait(&s.empty[st], ((kb / kStages) - 1) & 1);
      mbar_expect_tx(&s.full[st], S::kStageBytes);
      tma_load(s.w[st], &wmap, &s.full[st], kb * kBlockK, n0);
      tma_load(s.x[st], &xmap, &s.full[st], kb * kBlockK, 0);
    }
    return;
  }

  // Consumers. Accumulator fragment of wgmma m64nNk (PTX ISA): d[4j + i] is token row
  // 16 warp + lane / 4 (+ 8 for i >= 2), weight row 8 j + 2 (lane % 4) + (i % 2).
  grid_wait();  // x_scale is the previous grid's output
  const int r0 = warp * 16 + lane / 4, r1 = r0 + 8;
  const float* ws = a.w_scale + static_cast<size_t>(n0 / 128) * kblocks;
  float total[kRegs];
#pragma unroll
  for (int i = 0; i < kRegs; ++i) total[i] = 0.0f;
  for (int kb = 0; kb < kblocks; ++kb) {
    const int st = kb % kStages;
    mbar_wait(&s.full[st], (kb / kStages) & 1);
    float part[kRegs];
#pragma unroll
    for (int i = 0; i < kRegs; ++i) part[i] = 0.0f;
    fence_regs(part);
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
    const uint64_t da = sw128_desc(s.x[st]), db = sw128_desc(s.w[st]);
#pragma unroll
    for (int k = 0; k < kBlockK / 32; ++k) wgmma_k32(part, da + 2 * k, db + 2 * k, k);  // +32 bytes of K
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    fence_regs(part);
    mbar_arrive(&s.empty[st]);
    const float w_s = __ldg(ws + kb);
    const float s0 = r0 < a.M ? w_s * __ldg(a.x_scale + static_cast<size_t>(kb) * a.M + r0) : 0.0f;
    const float s1 = r1 < a.M ? w_s * __ldg(a.x_scale + static_cast<size_t>(kb) * a.M + r1) : 0.0f;
#pragma unroll
    for (int j = 0; j < kTileN / 8; ++j) {
      total[4 * j] = fmaf(part[4 * j], s0, total[4 * j]);
      total[4 * j + 1] = fmaf(part[4 * j + 1], s0, total[4 * j + 1]);
      total[4 * j + 2] = fmaf(part[4 * j + 2], s1, total[4 * j + 2]);
      total[4 * j + 3] = fmaf(part[4 * j + 3], s1, total[4 * j + 3]);
    }
  }
  grid_trigger();  // the next grid may launch; it waits for this one's completion before reading y
#pragma unroll
  for (int j = 0; j < kTileN / 8; ++j) {
    const int n = n0 + 8 * j + 2 * (lane % 4);
    if (n >= a.N) continue;
    if (r0 < a.M)
      *reinterpret_cast<__nv_bfloat162*>(a.y + static_cast<size_t>(r0) * a.N + n) =
          __floats2bfloat162_rn(total[4 * j], total[4 * j + 1]);
    if (r1 < a.M)
      *reinterpret_cast<__nv_bfloat162*>(a.y + static_cast<size_t>(r1) * a.N + n) =
          __floats2bfloat162_rn(total[4 * j + 2], total[4 * j + 3]);
  }
}

// Plays the quantizing kernel before a GEMM: waits ~`ns`, then writes the activation scales.
__global__ void predecessor_kernel(float* x_scale, int n, float v, unsigned ns) {
  grid_wait();
  grid_trigger();
  __nanosleep(ns);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x_scale[i] = v;
}

CUtensorMap k_major_map(const void* base, uint64_t rows, uint64_t k_bytes, uint32_t box_rows) {
  CUtensorMap map;
  const cuuint64_t dims[2] = {k_bytes, rows};
  const cuuint64_t strides[1] = {k_bytes};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kBlockK), box_rows};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r = cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims,
                                            strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);  // rows past the end read as 0
  fail_if(r != CUDA_SUCCESS, "cuTensorMapEncodeTiled failed", __FILE__, __LINE__);
  return map;
}

template <int kTileN, int kStages>
void launch(const CUtensorMap& wmap, const CUtensorMap& xmap, const Args& a, bool pdl, cudaStream_t stream) {
  static const bool sized = [] {
    CK(cudaFuncSetAttribute(skinny_kernel<kTileN, kStages>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            static_cast<int>(kSmemBytes<kTileN, kStages>)));
    return true;
  }();
  (void)sized;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(a.N / kTileN));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = kSmemBytes<kTileN, kStages>;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  CK(cudaLaunchKernelEx(&cfg, skinny_kernel<kTileN, kStages>, wmap, xmap, a));
}

}  // namespace

int main() {
  const LtSession session;
  cublasLtHandle_t lt = session.lt;
  void* ws = session.ws;
  const size_t ws_bytes = session.ws_bytes;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::printf("| shape | M | weight rows x stages | max diff / max |y| | ours us | ours GB/s | cuBLASLt us | cuBLASLt GB/s | ours / cuBLASLt | "
              "behind a 3 us kernel: plain us | with dependent launch us |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const GemmShape& s : kQwen3_8bShapes) {
    const size_t wbytes = static_cast<size_t>(s.n) * s.k;
    const WeightCopies wc(s, true);
    const int copies = wc.count();
    const std::vector<uint8_t*>& w = wc.w;
    const std::vector<float*>& wsc = wc.scale;
    std::vector<CUtensorMap> wmaps32(copies), wmaps64(copies);  // boxes of 32 and 64 weight rows
    for (int c = 0; c < copies; ++c) {
      wmaps32[c] = k_major_map(w[c], s.n, s.k, 32);
      wmaps64[c] = k_major_map(w[c], s.n, s.k, 64);
    }
    for (int M : {1, 8, 16, 33, 64}) {
      uint8_t* x;
      float* xsc;
      __nv_bfloat16 *y, *y_ref;
      CK(cudaMalloc(&x, static_cast<size_t>(M) * s.k));
      CK(cudaMalloc(&xsc, static_cast<size_t>(s.k / 128) * M * 4));
      CK(cudaMalloc(&y, static_cast<size_t>(M) * s.n * 2));
      CK(cudaMalloc(&y_ref, static_cast<size_t>(M) * s.n * 2));
      fill_fp8<<<256, 256>>>(x, static_cast<size_t>(M) * s.k, 99u);
      fill_scales<<<64, 256>>>(xsc, static_cast<size_t>(s.k / 128) * M, 7u);
      const CUtensorMap xmap = k_major_map(x, M, s.k, kTileM);

      // cuBLASLt on the same operands: fp8_gemm's descriptor (scripts/harness_util.cuh).
      cublasLtMatmulDesc_t desc = block_scaled_fp8_desc();
      auto set_scales = [&](const float* a_s) {
        LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_s, sizeof(a_s)));
        LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &xsc, sizeof(xsc)));
      };
      set_scales(wsc[0]);
      const LtLayouts lay(s.n, s.k, M);
      const cublasLtMatrixLayout_t la = lay.a, lb = lay.b, ld = lay.d;
      cublasLtMatmulPreference_t pref;
      LK(cublasLtMatmulPreferenceCreate(&pref));
      LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
      cublasLtMatmulHeuristicResult_t res{};
      int found = 0;
      LK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &res, &found));
      const float alpha = 1.0f, beta = 0.0f;
      auto lt_run = [&](int c) {
        set_scales(wsc[c]);
        LK(cublasLtMatmul(lt, desc, &alpha, w[c], la, x, lb, &beta, y_ref, ld, y_ref, ld, &res.algo, ws, ws_bytes, 0));
      };
      // The configurations tried: weight rows a CTA (wgmma N) x ring depth (stages of 8 + 4 or 8 KB).
      struct Config { int tile_n, stages; };
      const Config configs[] = {{32, 4}, {32, 8}, {32, 16}, {64, 4}, {64, 8}, {64, 12}};
      Config cfg = configs[0];
      auto ours = [&](int c, bool pdl) {
        const Args args{wsc[c], xsc, y, M, s.n, s.k};
        const CUtensorMap& m32 = wmaps32[c];
        const CUtensorMap& m64 = wmaps64[c];
        if (cfg.tile_n == 32 && cfg.stages == 4) launch<32, 4>(m32, xmap, args, pdl, 0);
        else if (cfg.tile_n == 32 && cfg.stages == 8) launch<32, 8>(m32, xmap, args, pdl, 0);
        else if (cfg.tile_n == 32) launch<32, 16>(m32, xmap, args, pdl, 0);
        else if (cfg.stages == 4) launch<64, 4>(m64, xmap, args, pdl, 0);
        else if (cfg.stages == 8) launch<64, 8>(m64, xmap, args, pdl, 0);
        else launch<64, 12>(m64, xmap, args, pdl, 0);
      };
      // Each configuration against cuBLASLt's output: the largest max |diff| / max |y| of them all.
      lt_run(0);
      CK(cudaDeviceSynchronize());
      std::vector<__nv_bfloat16> h(static_cast<size_t>(M) * s.n), r(h.size());
      CK(cudaMemcpy(r.data(), y_ref, r.size() * 2, cudaMemcpyDeviceToHost));
      double diff = 0, scale = 0;
      for (const Config& one : configs) {
        cfg = one;
        CK(cudaMemset(y, 0xFF, h.size() * 2));  // NaN: an output the kernel misses shows
        ours(0, false);
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(h.data(), y, h.size() * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < h.size(); ++i) {
          const double g = __bfloat162float(h[i]), e = __bfloat162float(r[i]);
          diff = std::isnan(g) ? INFINITY : std::max(diff, std::fabs(g - e));
          scale = std::max(scale, std::fabs(e));
        }
      }

      const int calls = 20;
      const double lt_us = median_us([&](int rep) { for (int c = 0; c < calls; ++c) lt_run((rep * calls + c) % copies); }, calls, 7, e0, e1);
      const double gb = static_cast<double>(wbytes) / 1e3;
      for (const Config& one : configs) {
        cfg = one;
        const double ours_us = median_us([&](int rep) { for (int c = 0; c < calls; ++c) ours((rep * calls + c) % copies, false); }, calls, 7, e0, e1);
        // Behind a ~3 us predecessor (the quantizing kernel's place), each pair timed together.
        auto chained = [&](bool pdl) {
          return median_us(
              [&](int rep) {
                for (int c = 0; c < calls; ++c) {
                  predecessor_kernel<<<1, 128>>>(xsc, (s.k / 128) * M, 1.0f / 48, 3000);
                  ours((rep * calls + c) % copies, pdl);
                }
              },
              calls, 7, e0, e1);
        };
        const double plain_us = chained(false), pdl_us = chained(true);
        CK(cudaGetLastError());
        std::printf("| %s | %d | %d x %d | %.2e | %.1f | %.0f | %.1f | %.0f | %.2fx | %.1f | %.1f |\n", s.name, M, one.tile_n, one.stages,
                    diff / std::max(scale, 1e-30), ours_us, gb / ours_us, lt_us, gb / lt_us, lt_us / ours_us, plain_us, pdl_us);
        std::fflush(stdout);
      }
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatmulDescDestroy(desc);
      cudaFree(x), cudaFree(xsc), cudaFree(y), cudaFree(y_ref);
    }
  }
  return 0;
}
