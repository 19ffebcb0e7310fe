// A block-scaled FP8 GEMM for decode sizes (M = 4-64 tokens, multiples of 4) built the way
// DeepGEMM builds its kernels (skinny_gemm.cuh beside this file), to answer one question before
// it goes near the engine: can a kernel that loads its first weight tiles BEFORE the
// dependent-launch wait, and streams the rest through a TMA ring, read weights faster than
// cuBLASLt's and CUTLASS's block-scaled kernels at M = 4-64 (they reach ~1.1-2.3 TB/s and pay
// ~4 us of ramp per GEMM; CUTLASS's producer waits for the previous grid at the top of its
// mainloop, so nothing streams under the kernel before it)?
//
//   bash scripts/fp8-skinny-tma/build.sh && ./fp8_skinny_tma
//
// y [M, N] = x [M, K] . w [N, K]^T with 1x128 activation groups (x_scale [K/128, M]) and 128x128
// weight blocks (w_scale [N/128, K/128]), bf16 out: fp8_gemm's operands and layouts, on the four
// Qwen3-8B decode projections. Each configuration is checked against cuBLASLt on the same
// operands (max |diff| relative to max |y|; one bf16 ulp is ~2e-3 of it), then timed beside it
// over rotated weight copies (>= 512 MB, so each call reads HBM), and once more behind a ~3 us
// kernel that plays the quantizing kernel before each GEMM, launched with and without dependent
// launch. Results: docs/BENCHMARKS.md (twenty-first session).
#include "../harness_util.cuh"
#include "skinny_gemm.cuh"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <type_traits>
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
  std::printf("| shape | M | orientation, weight rows x consumer warpgroups | max diff / max |y| | ours us | ours GB/s | cuBLASLt us | cuBLASLt GB/s | ours / cuBLASLt | "
              "behind a 3 us kernel: plain us | with dependent launch us |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const GemmShape& s : kQwen3_8bShapes) {
    const size_t wbytes = static_cast<size_t>(s.n) * s.k;
    const WeightCopies wc(s, true);
    const int copies = wc.count();
    const std::vector<uint8_t*>& w = wc.w;
    const std::vector<float*>& wsc = wc.scale;
    std::vector<CUtensorMap> wmaps32(copies), wmaps64(copies);  // boxes of 32 and 64 weight rows
    for (int c = 0; c < copies; ++c) {
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
      // x in boxes of 64 rows (the plain orientation) and of the swapped one's 16 / 32 / 64.
      const int xrows = M <= 16 ? 16 : M <= 32 ? 32 : 64;
      const CUtensorMap xmap64 = map_or_die(x, M, s.k, 64), xmap_sw = map_or_die(x, M, s.k, xrows);

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
      // The configurations tried. Plain: weight rows a CTA (wgmma N) x 8 stages x consumer groups,
      // the two best plain ones of the second version's run (docs/BENCHMARKS.md). Swapped: 64 weight rows a CTA (wgmma M),
      // the tokens padded to 16 / 32 / 64 (wgmma N), as many stages as ~200 KB hold, 1, 2 or 4 groups.
      struct Config { bool swap; int w_rows, groups; };
      const Config configs[] = {{false, 32, 2}, {false, 64, 4}, {true, 64, 1}, {true, 64, 2}, {true, 64, 4}};
      Config cfg = configs[0];
      auto ours = [&](int c, bool pdl) {
        const Args args{wsc[c], xsc, y, M, s.n, s.k};
        if (!cfg.swap) {
          if (cfg.w_rows == 32) CK((launch<32, 64, 8, 2, false>(wmaps32[c], xmap64, args, pdl, 0)));
          else CK((launch<64, 64, 8, 4, false>(wmaps64[c], xmap64, args, pdl, 0)));
          return;
        }
        auto swapped = [&](auto xr, auto stages) {
          constexpr int kX = decltype(xr)::value, kS = decltype(stages)::value;
          if (cfg.groups == 1) CK((launch<64, kX, kS, 1, true>(wmaps64[c], xmap_sw, args, pdl, 0)));
          else if (cfg.groups == 2) CK((launch<64, kX, kS, 2, true>(wmaps64[c], xmap_sw, args, pdl, 0)));
          else CK((launch<64, kX, kS, 4, true>(wmaps64[c], xmap_sw, args, pdl, 0)));
        };
        if (xrows == 16) swapped(std::integral_constant<int, 16>{}, std::integral_constant<int, 20>{});
        else if (xrows == 32) swapped(std::integral_constant<int, 32>{}, std::integral_constant<int, 16>{});
        else swapped(std::integral_constant<int, 64>{}, std::integral_constant<int, 12>{});
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
        std::printf("| %s | %d | %s %d x %d | %.2e | %.1f | %.0f | %.1f | %.0f | %.2fx | %.1f | %.1f |\n", s.name, M, one.swap ? "swapped" : "plain", one.w_rows, one.groups,
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
