// Does cuBLASLt have a faster block-scaled FP8 kernel at decode sizes than the one its heuristic
// picks first? fp8_gemm (quant/fp8_gemm.cpp) takes the heuristic's first algorithm; this asks for
// up to 32 candidates per shape, adds that algorithm with K split 2-16 ways, and times each on
// the GPU machine, with the same descriptor
// (128x128 weight blocks x 1x128 activation groups, E4M3, bf16 out) and layouts as fp8_gemm.
//   bash scripts/cublaslt-sweep/build.sh && ./cublaslt_sweep
// Weights are rotated through >= 512 MB of copies so each call reads HBM, not L2; each candidate's
// output is checked against the first's.
// SWEEP_M="1024,8192" times other row counts (prefill and training sizes); SWEEP_ENUM=1 also
// enumerates the configurations cuBLASLt accepts beyond its heuristic's (every algorithm id's
// tiles of at least 64x64, stages of 64-128 K elements and cluster shapes auto / 1x1 / 2x1 / 1x2 that
// cublasLtMatmulAlgoCheck accepts), at most SWEEP_MAX candidates (default 400) a shape.
// On an H100 (CUDA 13.0, twentieth session) at M = 8192 the heuristic returned one candidate per
// shape (algorithm 66, 128x128 tiles, 128xAUTO stages: 1248-1281 TFLOP/s), and cuBLASLt accepted
// no enumerated configuration and no split-K: its block-scaled FP8 path offers nothing to tune.
#include "../harness_util.cuh"
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main() {
  const LtSession session;
  cublasLtHandle_t lt = session.lt;
  void* ws = session.ws;
  const size_t ws_bytes = session.ws_bytes;
  std::vector<int64_t> ms{4, 8, 16, 32, 64, 128, 256};
  if (const char* env = std::getenv("SWEEP_M")) {
    ms.clear();
    for (const char* c = env; *c;) {
      ms.push_back(std::strtoll(c, const_cast<char**>(&c), 10));
      if (*c == ',') ++c;
    }
  }
  const bool enumerate = std::getenv("SWEEP_ENUM") != nullptr && std::string(std::getenv("SWEEP_ENUM")) == "1";
  const int max_candidates = std::getenv("SWEEP_MAX") ? std::atoi(std::getenv("SWEEP_MAX")) : 400;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::printf("| shape | M | N | K | heuristic + split-K + enumerated candidates | first us | first GB/s | best us | best GB/s | best/first | best: tile (candidate), stages, splitK, reduction, cluster, algorithm id (-1: not reported) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (const GemmShape& s : kQwen3_8bShapes) {
    const WeightCopies wc(s, false);
    const int copies = wc.count();
    const std::vector<uint8_t*>& w = wc.w;
    const std::vector<float*>& wsc = wc.scale;
    for (int64_t M : ms) {
      uint8_t* x;
      float* xsc;
      __nv_bfloat16 *y, *y0;
      CK(cudaMalloc(&x, M * s.k));
      CK(cudaMalloc(&xsc, (s.k / 128) * M * 4));
      CK(cudaMalloc(&y, M * s.n * 2));
      CK(cudaMalloc(&y0, M * s.n * 2));
      fill_fp8<<<256, 256>>>(x, M * s.k, 99u);
      fill_scales<<<64, 256>>>(xsc, (s.k / 128) * M, 0u);
      cublasLtMatmulDesc_t desc = block_scaled_fp8_desc();
      const int8_t fast = 0;
      LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)));
      auto set_scales = [&](const float* a_s, const float* b_s) {
        LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_s, sizeof(a_s)));
        LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_s, sizeof(b_s)));
      };
      set_scales(wsc[0], xsc);
      const LtLayouts lay(s.n, s.k, M);
      const cublasLtMatrixLayout_t la = lay.a, lb = lay.b, ld = lay.d;
      cublasLtMatmulPreference_t pref;
      LK(cublasLtMatmulPreferenceCreate(&pref));
      LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
      std::vector<cublasLtMatmulHeuristicResult_t> res(32 + (enumerate ? max_candidates : 0));
      int found = 0;
      LK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 32, res.data(), &found));
      const int heuristic = found;
      // More candidates: the first algorithm with K split 2-16 ways, partial sums reduced in
      // float in the workspace (a separate, deterministic pass; the scheme the heuristic itself
      // picks for the down projection). Kept when cublasLtMatmulAlgoCheck accepts them.
      for (int split : {2, 3, 4, 6, 8, 12, 16}) {
        if (found >= 32 || heuristic == 0) break;
        cublasLtMatmulHeuristicResult_t cand = res[0];
        const int32_t scheme = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
        if (cublasLtMatmulAlgoConfigSetAttribute(&cand.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof(split)) !=
                CUBLAS_STATUS_SUCCESS ||
            cublasLtMatmulAlgoConfigSetAttribute(&cand.algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                                 sizeof(scheme)) != CUBLAS_STATUS_SUCCESS)
          continue;
        cublasLtMatmulHeuristicResult_t checked{};
        if (cublasLtMatmulAlgoCheck(lt, desc, la, lb, ld, ld, &cand.algo, &checked) != CUBLAS_STATUS_SUCCESS ||
            checked.workspaceSize > ws_bytes)
          continue;
        res[found++] = cand;
      }
      int enumerated = 0;
      if (enumerate) {  // every algorithm id x tile x stages x cluster shape cuBLASLt accepts
        int ids[128];
        int n_ids = 0;
        LK(cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_8F_E4M3, CUDA_R_8F_E4M3, CUDA_R_16BF,
                                    CUDA_R_16BF, 128, ids, &n_ids));
        const int32_t clusters[] = {CUBLASLT_CLUSTER_SHAPE_AUTO, CUBLASLT_CLUSTER_SHAPE_1x1x1, CUBLASLT_CLUSTER_SHAPE_2x1x1,
                                    CUBLASLT_CLUSTER_SHAPE_1x2x1};
        for (int a = 0; a < n_ids && found < static_cast<int>(res.size()); ++a) {
          cublasLtMatmulAlgo_t algo;
          if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_8F_E4M3, CUDA_R_8F_E4M3, CUDA_R_16BF,
                                     CUDA_R_16BF, ids[a], &algo) != CUBLAS_STATUS_SUCCESS)
            continue;
          uint32_t tiles[256], stages[256];
          size_t tb = 0, sb = 0;
          cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_TILE_IDS, tiles, sizeof(tiles), &tb);
          cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_STAGES_IDS, stages, sizeof(stages), &sb);
          const int nt = tb ? static_cast<int>(tb / 4) : 1, ns = sb ? static_cast<int>(sb / 4) : 1;
          if (!tb) tiles[0] = CUBLASLT_MATMUL_TILE_UNDEFINED;
          if (!sb) stages[0] = CUBLASLT_MATMUL_STAGES_UNDEFINED;
          for (int t = 0; t < nt; ++t) {
            // Tiles of at least 64 x 64: the enum runs 64x64 .. 128x96 but for 128x32.
            const uint32_t ti = tiles[t];
            if (ti != CUBLASLT_MATMUL_TILE_UNDEFINED &&
                (ti < CUBLASLT_MATMUL_TILE_64x64 || ti > CUBLASLT_MATMUL_TILE_128x96 || ti == CUBLASLT_MATMUL_TILE_128x32))
              continue;
            for (int st = 0; st < ns; ++st) {
              // Stages of 64 or 128 K elements (64x4 .. 128x6, 64xAUTO, 128xAUTO), or unset.
              const uint32_t si = stages[st];
              const bool wide = (si >= CUBLASLT_MATMUL_STAGES_64x4 && si <= CUBLASLT_MATMUL_STAGES_128x6) ||
                                si == CUBLASLT_MATMUL_STAGES_64xAUTO || si == CUBLASLT_MATMUL_STAGES_128xAUTO;
              if (si != CUBLASLT_MATMUL_STAGES_UNDEFINED && !wide) continue;
              for (int32_t cl : clusters) {
                if (found >= static_cast<int>(res.size())) break;
                cublasLtMatmulAlgo_t cand = algo;
                const int32_t tile = static_cast<int32_t>(tiles[t]), stage = static_cast<int32_t>(stages[st]);
                cublasLtMatmulAlgoConfigSetAttribute(&cand, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile));
                cublasLtMatmulAlgoConfigSetAttribute(&cand, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stage, sizeof(stage));
                cublasLtMatmulAlgoConfigSetAttribute(&cand, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cl, sizeof(cl));
                cublasLtMatmulHeuristicResult_t checked{};
                if (cublasLtMatmulAlgoCheck(lt, desc, la, lb, ld, ld, &cand, &checked) != CUBLAS_STATUS_SUCCESS ||
                    checked.workspaceSize > ws_bytes)
                  continue;
                checked.algo = cand;
                res[found++] = checked;
                ++enumerated;
              }
            }
          }
        }
      }
      const float alpha = 1.0f, beta = 0.0f;
      auto run = [&](int i, int c, __nv_bfloat16* out) {
        set_scales(wsc[c], xsc);
        return cublasLtMatmul(lt, desc, &alpha, w[c], la, x, lb, &beta, out, ld, out, ld, &res[i].algo, ws, ws_bytes, 0);
      };
      // The check reads the first 4M outputs at most (a whole 8192 x 24576 product is 400 MB a copy).
      const size_t checked_n = std::min<size_t>(static_cast<size_t>(M * s.n), size_t{4} << 20);
      std::vector<__nv_bfloat16> h0(checked_n), h1(checked_n);
      double first_us = 0, best_us = 1e30;
      int best = -1;
      for (int i = 0; i < found; ++i) {
        if (run(i, 0, i == 0 ? y0 : y) != CUBLAS_STATUS_SUCCESS) continue;
        CK(cudaDeviceSynchronize());
        if (i > 0) {  // same product as the first candidate?
          CK(cudaMemcpy(h0.data(), y0, checked_n * 2, cudaMemcpyDeviceToHost));
          CK(cudaMemcpy(h1.data(), y, checked_n * 2, cudaMemcpyDeviceToHost));
          double num = 0, den = 0;
          for (size_t j = 0; j < h0.size(); ++j) {
            const double a = __bfloat162float(h0[j]), b = __bfloat162float(h1[j]);
            num = std::max(num, std::fabs(a - b));
            den = std::max(den, std::fabs(a));
          }
          if (num > 1e-2 * den) {
            std::printf("candidate %d differs (%.3g of %.3g): skipped\n", i, num, den);
            continue;
          }
        }
        for (int c = 0; c < 3; ++c) run(i, c % copies, y);
        const int calls = M >= 1024 ? 4 : 20;
        const double us = median_us([&](int rep) { for (int c = 0; c < calls; ++c) run(i, (rep * calls + c) % copies, y); },
                                    calls, M >= 1024 ? 5 : 7, e0, e1);
        if (i == 0) first_us = us;
        if (us < best_us) best_us = us, best = i;
      }
      int tile = -1, stages = -1, splitk = -1, red = -1, cluster = -1, algo_id = -1;
      if (best >= 0) {
        size_t sz;
        cublasLtMatmulAlgoConfigGetAttribute(&res[best].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &sz);
        cublasLtMatmulAlgoConfigGetAttribute(&res[best].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &sz);
        cublasLtMatmulAlgoConfigGetAttribute(&res[best].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), &sz);
        cublasLtMatmulAlgoConfigGetAttribute(&res[best].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof(red), &sz);
        cublasLtMatmulAlgoConfigGetAttribute(&res[best].algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof(cluster), &sz);
        cublasLtMatmulAlgoConfigGetAttribute(&res[best].algo, CUBLASLT_ALGO_CONFIG_ID, &algo_id, sizeof(algo_id), &sz);
      }
      const double gb = static_cast<double>(s.n) * s.k / 1e3;  // weight bytes / 1e3: GB/s from us
      const double tflop = 2.0 * static_cast<double>(M) * s.n * s.k / 1e6;  // per us -> TFLOP/s
      std::printf("| %s | %lld | %lld | %lld | %d + %d + %d | %.1f | %.0f (%.0f TFLOP/s) | %.1f | %.0f (%.0f TFLOP/s) | %.2f | %d (#%d), %d, %d, %d, cluster %d, algo %d |\n",
                  s.name, (long long)M, (long long)s.n, (long long)s.k, heuristic, found - heuristic - enumerated, enumerated,
                  first_us, gb / first_us, tflop / first_us, best_us, gb / best_us, tflop / best_us, first_us / best_us, tile, best,
                  stages, splitk, red, cluster, algo_id);
      std::fflush(stdout);
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatmulDescDestroy(desc);
      cudaFree(x), cudaFree(xsc), cudaFree(y), cudaFree(y0);
    }
  }
  return 0;
}
