// A block-scaled FP8 GEMM for decode sizes (M = 4-64 tokens, multiples of 4) built the way DeepGEMM builds its
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
#include "quant/cuda/fp8_gemm_tma.cuh"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <vector>

namespace {

using namespace fp8rl::cuda::tma_gemm;

CUtensorMap map_or_die(const void* base, uint64_t rows, uint64_t k_bytes, uint32_t box_rows) {
  CUtensorMap map;
  fail_if(k_major_map(&map, base, rows, k_bytes, box_rows) != CUDA_SUCCESS, "cuTensorMapEncodeTiled failed", __FILE__,
          __LINE__);
  return map;
}

// Plays the quantizing kernel before a GEMM: waits ~`ns`, then writes the activation scales.
__global__ void predecessor_kernel(float* x_scale, int n, float v, unsigned ns) {
  fp8rl::pdl::wait();
  fp8rl::pdl::launch_dependents();
  __nanosleep(ns);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x_scale[i] = v;
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
  std::printf("| shape | M | weight rows x stages x consumer warpgroups | max diff / max |y| | ours us | ours GB/s | cuBLASLt us | cuBLASLt GB/s | ours / cuBLASLt | "
              "behind a 3 us kernel: plain us | with dependent launch us |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const GemmShape& s : kQwen3_8bShapes) {
    const size_t wbytes = static_cast<size_t>(s.n) * s.k;
    const WeightCopies wc(s, true);
    const int copies = wc.count();
    const std::vector<uint8_t*>& w = wc.w;
    const std::vector<float*>& wsc = wc.scale;
    std::vector<CUtensorMap> wmaps16(copies), wmaps32(copies), wmaps64(copies);  // boxes of 16, 32, 64 weight rows
    for (int c = 0; c < copies; ++c) {
      wmaps16[c] = map_or_die(w[c], s.n, s.k, 16);
      wmaps32[c] = map_or_die(w[c], s.n, s.k, 32);
      wmaps64[c] = map_or_die(w[c], s.n, s.k, 64);
    }
    for (int M : {4, 16, 36, 64}) {  // the engine pads M to a multiple of 4; cuBLASLt takes no other
      uint8_t* x;
      float* xsc;
      __nv_bfloat16 *y, *y_ref;
      CK(cudaMalloc(&x, static_cast<size_t>(M) * s.k));
      CK(cudaMalloc(&xsc, static_cast<size_t>(s.k / 128) * M * 4));
      CK(cudaMalloc(&y, static_cast<size_t>(M) * s.n * 2));
      CK(cudaMalloc(&y_ref, static_cast<size_t>(M) * s.n * 2));
      fill_fp8<<<256, 256>>>(x, static_cast<size_t>(M) * s.k, 99u);
      fill_scales<<<64, 256>>>(xsc, static_cast<size_t>(s.k / 128) * M, 7u);
      const CUtensorMap xmap = map_or_die(x, M, s.k, kTileM);

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
      struct Config { int tile_n, stages, groups; bool pipe; };
      const Config configs[] = {{16, 8, 2, false}, {16, 8, 4, false}, {32, 8, 2, false}, {32, 8, 4, false},
                                {64, 4, 2, false}, {64, 8, 4, false}, {16, 8, 2, true},  {32, 8, 2, true},
                                {64, 8, 2, true}};
      Config cfg = configs[0];
      auto ours = [&](int c, bool pdl) {
        const Args args{wsc[c], xsc, y, M, s.n, s.k};
        const int key = cfg.tile_n * 100000 + cfg.stages * 1000 + cfg.groups * 10 + cfg.pipe;
        switch (key) {
          case 1608020: CK((launch<16, 8, 2, false>(wmaps16[c], xmap, args, pdl, 0))); break;
          case 1608040: CK((launch<16, 8, 4, false>(wmaps16[c], xmap, args, pdl, 0))); break;
          case 3208020: CK((launch<32, 8, 2, false>(wmaps32[c], xmap, args, pdl, 0))); break;
          case 3208040: CK((launch<32, 8, 4, false>(wmaps32[c], xmap, args, pdl, 0))); break;
          case 6404020: CK((launch<64, 4, 2, false>(wmaps64[c], xmap, args, pdl, 0))); break;
          case 6408040: CK((launch<64, 8, 4, false>(wmaps64[c], xmap, args, pdl, 0))); break;
          case 1608021: CK((launch<16, 8, 2, true>(wmaps16[c], xmap, args, pdl, 0))); break;
          case 3208021: CK((launch<32, 8, 2, true>(wmaps32[c], xmap, args, pdl, 0))); break;
          default: CK((launch<64, 8, 2, true>(wmaps64[c], xmap, args, pdl, 0))); break;
        }
      };
      // Each configuration against cuBLASLt's output: max |diff| / max |y|, one a configuration.
      lt_run(0);
      CK(cudaDeviceSynchronize());
      std::vector<__nv_bfloat16> h(static_cast<size_t>(M) * s.n), r(h.size());
      CK(cudaMemcpy(r.data(), y_ref, r.size() * 2, cudaMemcpyDeviceToHost));
      double scale = 1e-30;
      for (const __nv_bfloat16 e : r) scale = std::max(scale, std::fabs(static_cast<double>(__bfloat162float(e))));
      std::vector<double> rel;
      for (const Config& one : configs) {
        cfg = one;
        CK(cudaMemset(y, 0xFF, h.size() * 2));  // NaN: an output the kernel misses shows
        ours(0, false);
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(h.data(), y, h.size() * 2, cudaMemcpyDeviceToHost));
        double diff = 0;
        for (size_t i = 0; i < h.size(); ++i) {
          const double g = __bfloat162float(h[i]), e = __bfloat162float(r[i]);
          diff = std::isnan(g) ? INFINITY : std::max(diff, std::fabs(g - e));
        }
        rel.push_back(diff / scale);
      }

      const int calls = 20;
      const double lt_us = median_us([&](int rep) { for (int c = 0; c < calls; ++c) lt_run((rep * calls + c) % copies); }, calls, 7, e0, e1);
      const double gb = static_cast<double>(wbytes) / 1e3;
      for (size_t ci = 0; ci < std::size(configs); ++ci) {
        const Config& one = configs[ci];
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
        std::printf("| %s | %d | %d x %d x %d%s | %.2e | %.1f | %.0f | %.1f | %.0f | %.2fx | %.1f | %.1f |\n", s.name, M, one.tile_n, one.stages, one.groups, one.pipe ? " pipelined" : "",
                    rel[ci], ours_us, gb / ours_us, lt_us, gb / lt_us, lt_us / ours_us, plain_us, pdl_us);
        std::fflush(stdout);
      }
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatmulDescDestroy(desc);
      cudaFree(x), cudaFree(xsc), cudaFree(y), cudaFree(y_ref);
    }
  }
  return 0;
}
