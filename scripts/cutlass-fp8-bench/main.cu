// Can CUTLASS's Hopper block-scaled FP8 GEMM beat cuBLASLt at decode batch sizes? At M = 16-64
// (decode at batch 16-64) fp8_gemm (quant/fp8_gemm.cpp) runs cuBLASLt's block-scaled kernel,
// which reads the weights at ~1.1-2.8 TB/s there (docs/BENCHMARKS.md, "Small-M FP8 GEMM at batch
// 16-64"): the largest item of an FP8 decode step at batch 64. This harness times CUTLASS 4.5's
// sm90 warp-specialized FP8 kernel with software block scaling (TMA loads, warpgroup MMAs, a
// producer warp, mbarriers: the structure our own wgmma attempt lacked) on the engine's Qwen3-8B
// shapes, with the operands swapped (D^T = W X^T) so the weight rows fill the MMA's 64/128-row
// side and the few tokens its N side (16-64 wide), against cuBLASLt on the same operands.
//   bash scripts/cutlass-fp8-bench/build.sh && ./cutlass_fp8_bench
//
// A second table asks the same of prefill and training sizes (M = 1024, 8192), where cuBLASLt's
// block-scaled kernel runs at ~1.2 PFLOP/s and the FP8 GEMMs are 61% of an 8K-token FP8 prefill
// (docs/BENCHMARKS.md): the same collective with the operands as they come (X as A with 1x128
// scales along M, W as B with 128x128 blocks), 128x128 and 128x256 tiles, one or two CTAs per
// cluster, persistent or stream-K, in TFLOP/s.
//
// A third table asks it of decode at batch 128-256 (M = 128, 256), where the engine runs
// cuBLASLt's block-scaled kernel (M is past CUTLASS's small-M path) and an H100 profile found the
// FP8 GEMMs reading their weights at ~1.7 TB/s against BF16's ~2.2 (docs/BENCHMARKS.md, ninth
// session): swapped ping-pong 128x64 and cooperative 128x64 / 128x128 (data-parallel and split-K
// 2), and the plain orientation's 128x128 and 128x256 tiles, all with the engine's K-major weight
// scales; in weight GB/s.
//
// Scales: 128x128 weight blocks and 1x128 activation groups, as the engine makes them. CUTLASS
// documents its sm90 collective for M/N-major scale tensors, so most configurations get the
// weight scales transposed ([K/128, N/128], N fastest); two read the engine's own layout
// ([N/128, K/128], K fastest: no copy to keep in sync with requantization), which the
// collective's layout logic also accepts when a tile holds one scale along M. The activation
// scales are the engine's layout ([K/128, M], M fastest). M is a multiple of 4 (the engine
// pads activation rows to 4), which TMA needs for the activation scales' row stride.
//
// Each configuration's output is checked against cuBLASLt's, element by element (same operands,
// both accumulate in fp32 and round to bf16: within 2% of each element, plus 0.1% of max |y| for
// elements near 0). Timing: CUDA graphs of 20 calls
// over rotated weight copies (>= 512 MB, so each call reads HBM, not L2), as the engine's decode
// graphs would run them; median of 7 replays. Weight GB/s = weight bytes / time.
#include "../harness_util.cuh"
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/blockwise_scale_layout.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler_params.h"
#include "cutlass/util/packed_stride.hpp"

// ---------------------------------------------------------------------------------------------
// The CUTLASS kernels: y [M, Nw] row-major = X [M, K] W [Nw, K]^T, fp32 accumulation promoted
// per 128-wide K block with both scales, bf16 out.
using namespace cute;

// One kernel in two orientations:
//   kSwapAB (decode sizes): D [Nw, M] column-major = W [Nw, K] as A x X as B; the weight's 128x128
//     scales on A, the activations' 1x128 scales on B;
//   plain (prefill and training sizes: M in the thousands): D [M, Nw] row-major = X [M, K] as A
//     (row-major) x W as B (K x Nw column-major); the activations' scales on A, the weight's on B.
// The same memory either way. kWeightScalesKMajor: the weight scales as the engine keeps them
// ([N/128, K/128], K fastest); else transposed ([K/128, N/128]), the layout CUTLASS documents
// for sm90. Activation scales are always [K/128, M], M fastest.
template <bool kSwapAB, int TileM, int TileN, class Cluster, class MainloopSchedule, class EpilogueSchedule,
          class TileScheduler, bool kWeightScalesKMajor>
struct BlockScaledGemm {
  static constexpr bool kSwap = kSwapAB;
  static constexpr bool kScalesKMajor = kWeightScalesKMajor;
  static constexpr auto kWeightMajor = kWeightScalesKMajor ? cute::GMMA::Major::K : cute::GMMA::Major::MN;
  using TileShape = Shape<Int<TileM>, Int<TileN>, _128>;
  using ClusterShape = Cluster;
  using ScaleConfig = std::conditional_t<
      kSwapAB, cutlass::detail::Sm90BlockwiseScaleConfig<128, 1, 128, kWeightMajor, cute::GMMA::Major::MN>,
      cutlass::detail::Sm90BlockwiseScaleConfig<1, 128, 128, cute::GMMA::Major::MN, kWeightMajor>>;
  using LayoutSFA = decltype(ScaleConfig::deduce_layoutSFA());
  using LayoutSFB = decltype(ScaleConfig::deduce_layoutSFB());
  using LayoutD = std::conditional_t<kSwapAB, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutD, 8, cutlass::bfloat16_t, LayoutD, 8,
      EpilogueSchedule>::CollectiveOp;
  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::float_e4m3_t,
      cute::tuple<cutlass::layout::RowMajor, LayoutSFA>, 16, cutlass::float_e4m3_t,
      cute::tuple<cutlass::layout::ColumnMajor, LayoutSFB>, 16, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                      CollectiveEpilogue, TileScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};
template <int TileM, int TileN, class MainloopSchedule, class EpilogueSchedule, class TileScheduler,
          bool kWeightScalesKMajor = false>
using SwapAbGemm = BlockScaledGemm<true, TileM, TileN, Shape<_1, _1, _1>, MainloopSchedule, EpilogueSchedule,
                                   TileScheduler, kWeightScalesKMajor>;
template <int TileM, int TileN, class Cluster, class MainloopSchedule, class EpilogueSchedule, class TileScheduler,
          bool kWeightScalesKMajor>
using PlainGemm =
    BlockScaledGemm<false, TileM, TileN, Cluster, MainloopSchedule, EpilogueSchedule, TileScheduler, kWeightScalesKMajor>;

using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8BlockScaledAccum;
using CoopEpi = cutlass::epilogue::TmaWarpSpecializedCooperative;
using Ping = cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8BlockScaledAccum;
using PingEpi = cutlass::epilogue::TmaWarpSpecialized;
using StreamK = cutlass::gemm::StreamKScheduler;
using Persistent = cutlass::gemm::PersistentScheduler;

// One GEMM call on given operands; `splits` > 1 asks the stream-K scheduler for split-K with
// that many splits, 0 for its stream-K heuristic, 1 for data-parallel tiles.
struct Operands {
  const uint8_t* w;         // [Nw, K]
  const float* w_scale_mn;  // [K/128, Nw/128]
  const float* w_scale_k;   // [Nw/128, K/128]
  const uint8_t* x;         // [M, K]
  const float* x_scale;     // [K/128, M]
  __nv_bfloat16* y;         // [M, Nw]
  int nw, m, k;
};

template <class G, bool kStreamK>
struct Runner {
  using Gemm = typename G::Gemm;
  int splits;
  int sms = 132;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  typename Gemm::Arguments args(const Operands& o) const {
    using StrideA = typename Gemm::GemmKernel::StrideA;
    using StrideB = typename Gemm::GemmKernel::StrideB;
    using StrideD = typename Gemm::GemmKernel::StrideD;
    // Swapped: A = W [Nw, K], B = X, D [Nw, M] column-major. Plain: A = X [M, K], B = W, D [M, Nw]
    // row-major. The same memory either way.
    const int rows = G::kSwap ? o.nw : o.m, cols = G::kSwap ? o.m : o.nw;
    const auto sa = cutlass::make_cute_packed_stride(StrideA{}, make_shape(rows, o.k, 1));
    const auto sb = cutlass::make_cute_packed_stride(StrideB{}, make_shape(cols, o.k, 1));
    const auto sd = cutlass::make_cute_packed_stride(StrideD{}, make_shape(rows, cols, 1));
    const auto lsfa = G::ScaleConfig::tile_atom_to_shape_SFA(make_shape(rows, cols, o.k, 1));
    const auto lsfb = G::ScaleConfig::tile_atom_to_shape_SFB(make_shape(rows, cols, o.k, 1));
    const auto* w = reinterpret_cast<const cutlass::float_e4m3_t*>(o.w);
    const auto* x = reinterpret_cast<const cutlass::float_e4m3_t*>(o.x);
    const float* w_scale = G::kScalesKMajor ? o.w_scale_k : o.w_scale_mn;
    typename Gemm::Arguments a{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {rows, cols, o.k, 1},
        {G::kSwap ? w : x, sa, G::kSwap ? x : w, sb, G::kSwap ? w_scale : o.x_scale, lsfa,
         G::kSwap ? o.x_scale : w_scale, lsfb},
        {{1.0f, 0.0f}, nullptr, sd, reinterpret_cast<cutlass::bfloat16_t*>(o.y), sd}};
    if constexpr (kStreamK) {
      using Mode = cutlass::gemm::kernel::detail::PersistentTileSchedulerSm90StreamKParams::DecompositionMode;
      a.scheduler.splits = std::max(splits, 1);
      a.scheduler.decomposition_mode =
          splits == 0 ? Mode::StreamK : (splits == 1 ? Mode::DataParallel : Mode::SplitK);
      using Reduction = cutlass::gemm::kernel::detail::PersistentTileSchedulerSm90StreamKParams::ReductionMode;
      a.scheduler.reduction_mode = Reduction::Deterministic;
    }
    a.hw_info.sm_count = sms;
    return a;
  }

  // Sizes the workspace for this shape; false when CUTLASS cannot run it.
  bool prepare(const Operands& o) {
    Gemm gemm;
    const auto a = args(o);
    if (gemm.can_implement(a) != cutlass::Status::kSuccess) return false;
    const size_t need = Gemm::get_workspace_size(a);
    if (need > workspace_bytes) {
      if (workspace) CK(cudaFree(workspace));
      CK(cudaMalloc(&workspace, need));
      workspace_bytes = need;
    }
    return true;
  }

  bool run(const Operands& o, cudaStream_t stream) const {
    Gemm gemm;
    const auto a = args(o);
    if (gemm.initialize(a, workspace, stream) != cutlass::Status::kSuccess) return false;
    return gemm.run(stream) == cutlass::Status::kSuccess;
  }
};

// ---------------------------------------------------------------------------------------------
// cuBLASLt, as fp8_gemm calls it: D [Nw, M] column-major = W^T-op [Nw, K] x X [K, M].
struct Lt {
  cublasLtHandle_t h;
  void* ws;
  size_t ws_bytes = 32u << 20;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, ld;
  cublasLtMatmulHeuristicResult_t algo;

  // The scale pointers go on the descriptor before the heuristic is asked: cuBLASLt 13 refuses
  // block and vector scale modes without them (quant/fp8_gemm.cpp says so too).
  Lt(cublasLtHandle_t handle, int nw, int m, int k, const float* w_scale, const float* x_scale) : h(handle) {
    CK(cudaMalloc(&ws, ws_bytes));
    desc = block_scaled_fp8_desc();
    LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof(w_scale)));
    LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof(x_scale)));
    LK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, k, nw, k));
    LK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, k, m, k));
    LK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, nw, m, nw));
    cublasLtMatmulPreference_t pref;
    LK(cublasLtMatmulPreferenceCreate(&pref));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
    int found = 0;
    LK(cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, ld, ld, pref, 1, &algo, &found));
    fail_if(found == 0, "cuBLASLt has no algorithm", __FILE__, __LINE__);
    cublasLtMatmulPreferenceDestroy(pref);
  }
  ~Lt() {
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(desc);
    cudaFree(ws);
  }
  // w_scale in cuBLASLt's layout: [Nw/128, K/128], K fastest.
  bool run(const uint8_t* w, const float* w_scale, const uint8_t* x, const float* x_scale, __nv_bfloat16* y,
           cudaStream_t stream) {
    LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof(w_scale)));
    LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof(x_scale)));
    const float alpha = 1.0f, beta = 0.0f;
    return cublasLtMatmul(h, desc, &alpha, w, la, x, lb, &beta, y, ld, y, ld, &algo.algo, ws, ws_bytes, stream) ==
           CUBLAS_STATUS_SUCCESS;
  }
};

// Median microseconds per call of `call(i)` (i = 0..calls-1 picks the weight copy), from CUDA
// graphs of `calls` calls replayed 7 times. Negative when capture fails.
double time_graph(cudaStream_t stream, int calls, const std::function<bool(int)>& call) {
  for (int i = 0; i < 3; ++i)
    if (!call(i)) return -1;  // warm-up, outside the capture
  CK(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  bool ok = true;
  for (int i = 0; i < calls; ++i) ok = ok && call(i);
  // A failed launch can invalidate the capture: then no graph, and this configuration is skipped.
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (ended != cudaSuccess || !ok) {
    if (ended == cudaSuccess) cudaGraphDestroy(graph);
    cudaGetLastError();
    return -1;
  }
  cudaGraphExec_t exec;
  CK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaGraphLaunch(exec, stream));
  std::vector<double> per;
  for (int rep = 0; rep < 7; ++rep) {
    CK(cudaEventRecord(e0, stream));
    CK(cudaGraphLaunch(exec, stream));
    CK(cudaEventRecord(e1, stream));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    per.push_back(1e3 * ms / calls);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(per.begin(), per.end());
  return per[per.size() / 2];
}

// The worst element's |a - b| / (|b| + 1e-3 max|b|) over bf16 outputs: two fp32-accumulated
// products rounded to bf16 differ by ~2^-8 of an element; one scale read from the wrong block
// (neighbouring scales differ by >= 6% here) moves a whole row or column by more.
double rel_diff(const __nv_bfloat16* a_d, const __nv_bfloat16* b_d, size_t n) {
  std::vector<__nv_bfloat16> a(n), b(n);
  CK(cudaMemcpy(a.data(), a_d, n * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(b.data(), b_d, n * 2, cudaMemcpyDeviceToHost));
  double top = 0, worst = 0;
  for (size_t i = 0; i < n; ++i) top = std::max(top, std::fabs(static_cast<double>(__bfloat162float(b[i]))));
  for (size_t i = 0; i < n; ++i) {
    const double x = __bfloat162float(a[i]), y = __bfloat162float(b[i]);
    worst = std::max(worst, std::fabs(x - y) / (std::fabs(y) + 1e-3 * top + 1e-30));
  }
  return worst;
}

struct Config {
  std::string name;
  std::function<bool(const Operands&)> prepare;
  std::function<bool(const Operands&, cudaStream_t)> run;
};

template <class G, bool kStreamK>
Config make_config(const std::string& name, int splits) {
  auto r = std::make_shared<Runner<G, kStreamK>>();
  r->splits = splits;
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  r->sms = prop.multiProcessorCount;
  return {name, [r](const Operands& o) { return r->prepare(o); },
          [r](const Operands& o, cudaStream_t s) { return r->run(o, s); }};
}

// One table: each shape and M, cuBLASLt against the fastest configuration that matches its
// output. `flops`: report TFLOP/s (compute-bound sizes) instead of weight GB/s. Every
// configuration's line goes to `detail`.
void bench(const std::vector<Config>& configs, const std::vector<int>& ms, bool flops, cublasLtHandle_t lt,
           cudaStream_t stream, std::string& detail) {
  struct Shape { const char* name; int nw, k; };
  const Shape shapes[] = {{"qkv (fused)", 6144, 4096}, {"o", 4096, 4096}, {"gate_up (fused)", 24576, 4096},
                          {"down", 4096, 12288}};
  const int calls = 20;
  const char* unit = flops ? "TFLOP/s" : "GB/s";
  std::printf("| shape | M | cuBLASLt us | cuBLASLt %s | best CUTLASS | us | %s | CUTLASS / cuBLASLt speed | configs matching cuBLASLt's output |\n",
              unit, unit);
  std::printf("|---|---:|---:|---:|---|---:|---:|---:|---:|\n");
  for (const Shape& s : shapes) {
    const size_t wbytes = static_cast<size_t>(s.nw) * s.k;
    const int copies = static_cast<int>(std::max<size_t>(2, (512u << 20) / wbytes));
    const int kb = s.k / 128, nb = s.nw / 128;
    std::vector<uint8_t*> w(copies);
    std::vector<float*> wsc(copies), wsc_mn(copies);
    // Distinct, non-uniform weight scales so a transposed or shifted scale read shows.
    std::vector<float> h_sc(static_cast<size_t>(nb) * kb), h_sc_mn(h_sc.size());
    for (int n = 0; n < nb; ++n)
      for (int k = 0; k < kb; ++k) {
        const float v = std::ldexp(1.0f + 0.03125f * ((n * 7 + k * 3) % 17), -6 - (n + k) % 3);
        h_sc[static_cast<size_t>(n) * kb + k] = v;      // cuBLASLt: [Nw/128, K/128]
        h_sc_mn[static_cast<size_t>(k) * nb + n] = v;   // CUTLASS: [K/128, Nw/128]
      }
    for (int c = 0; c < copies; ++c) {
      CK(cudaMalloc(&w[c], wbytes));
      CK(cudaMalloc(&wsc[c], h_sc.size() * 4));
      CK(cudaMalloc(&wsc_mn[c], h_sc.size() * 4));
      fill_fp8<<<1024, 256>>>(w[c], wbytes, 17u + c);
      CK(cudaMemcpy(wsc[c], h_sc.data(), h_sc.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(wsc_mn[c], h_sc_mn.data(), h_sc.size() * 4, cudaMemcpyHostToDevice));
    }
    for (int M : ms) {
      uint8_t* x;
      float* xsc;
      __nv_bfloat16 *y_ref, *y;
      CK(cudaMalloc(&x, static_cast<size_t>(M) * s.k));
      CK(cudaMalloc(&xsc, static_cast<size_t>(kb) * M * 4));
      CK(cudaMalloc(&y_ref, static_cast<size_t>(M) * s.nw * 2));
      CK(cudaMalloc(&y, static_cast<size_t>(M) * s.nw * 2));
      fill_fp8<<<256, 256>>>(x, static_cast<size_t>(M) * s.k, 99u);
      std::vector<float> h_xsc(static_cast<size_t>(kb) * M);
      for (size_t i = 0; i < h_xsc.size(); ++i) h_xsc[i] = std::ldexp(1.0f + 0.0625f * (i % 11), -5 - static_cast<int>(i % 2));
      CK(cudaMemcpy(xsc, h_xsc.data(), h_xsc.size() * 4, cudaMemcpyHostToDevice));

      Lt ref(lt, s.nw, M, s.k, wsc[0], xsc);
      fail_if(!ref.run(w[0], wsc[0], x, xsc, y_ref, stream), "cuBLASLt failed", __FILE__, __LINE__);
      CK(cudaStreamSynchronize(stream));
      const double lt_us =
          time_graph(stream, calls, [&](int i) { return ref.run(w[i % copies], wsc[i % copies], x, xsc, y, stream); });
      // Per microsecond: weight KB (= GB/s) or MFLOP (= TFLOP/s).
      const double work = flops ? 2.0 * M * s.nw * s.k / 1e6 : static_cast<double>(wbytes) / 1e3;
      double best_us = 1e30;
      std::string best = "-";
      int correct = 0;
      for (const Config& cfg : configs) {
        const Operands o0{w[0], wsc_mn[0], wsc[0], x, xsc, y, s.nw, M, s.k};
        if (!cfg.prepare(o0)) {
          detail += "| " + std::string(s.name) + " | " + std::to_string(M) + " | " + cfg.name + " | cannot run |\n";
          continue;
        }
        CK(cudaMemsetAsync(y, 0, static_cast<size_t>(M) * s.nw * 2, stream));
        if (!cfg.run(o0, stream)) {
          detail += "| " + std::string(s.name) + " | " + std::to_string(M) + " | " + cfg.name + " | launch failed |\n";
          continue;
        }
        CK(cudaStreamSynchronize(stream));
        const double err = rel_diff(y, y_ref, static_cast<size_t>(M) * s.nw);
        const double us = time_graph(stream, calls, [&](int i) {
          const int c = i % copies;
          return cfg.run(Operands{w[c], wsc_mn[c], wsc[c], x, xsc, y, s.nw, M, s.k}, stream);
        });
        char line[256];
        std::snprintf(line, sizeof line, "| %s | %d | %s | %.1f | %.0f %s | %.2e |\n", s.name, M, cfg.name.c_str(), us,
                      us > 0 ? work / us : 0.0, unit, err);
        detail += line;
        if (err > 2e-2) continue;  // wrong: never "best"
        ++correct;
        if (us > 0 && us < best_us) best_us = us, best = cfg.name;
      }
      std::printf("| %s | %d | %.1f | %.0f | %s | %.1f | %.0f | %.2fx | %d of %zu |\n", s.name, M, lt_us, work / lt_us,
                  best.c_str(), best_us, work / best_us, lt_us / best_us, correct, configs.size());
      std::fflush(stdout);
      cudaFree(x), cudaFree(xsc), cudaFree(y_ref), cudaFree(y);
    }
    for (int c = 0; c < copies; ++c) cudaFree(w[c]), cudaFree(wsc[c]), cudaFree(wsc_mn[c]);
  }
}

int main() {
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs\n\n", prop.name, prop.multiProcessorCount);
  cublasLtHandle_t lt;
  LK(cublasLtCreate(&lt));
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  using C128x16 = SwapAbGemm<128, 16, Coop, CoopEpi, StreamK>;
  using C128x32 = SwapAbGemm<128, 32, Coop, CoopEpi, StreamK>;
  using C128x64 = SwapAbGemm<128, 64, Coop, CoopEpi, StreamK>;
  // The collective takes 128 or 256 weight rows per tile (its scale promotion splits M by 128).
  using P128x16 = SwapAbGemm<128, 16, Ping, PingEpi, Persistent>;
  using P128x32 = SwapAbGemm<128, 32, Ping, PingEpi, Persistent>;
  using C128x32K = SwapAbGemm<128, 32, Coop, CoopEpi, StreamK, true>;
  std::vector<Config> configs;
  for (int tile_n : {16, 32, 64})
    for (int splits : {1, 2, 4, 8, 0}) {
      const std::string name = "coop 128x" + std::to_string(tile_n) + ", " +
                               (splits == 0 ? std::string("stream-K") : splits == 1 ? std::string("data-parallel")
                                                                                    : "split-K " + std::to_string(splits));
      if (tile_n == 16) configs.push_back(make_config<C128x16, true>(name, splits));
      if (tile_n == 32) configs.push_back(make_config<C128x32, true>(name, splits));
      if (tile_n == 64) configs.push_back(make_config<C128x64, true>(name, splits));
    }
  configs.push_back(make_config<P128x16, false>("pingpong 128x16", 1));
  configs.push_back(make_config<P128x32, false>("pingpong 128x32", 1));
  // The engine's own weight-scale layout (no transposed copy), if CUTLASS reads it right.
  configs.push_back(make_config<C128x32K, true>("coop 128x32, split-K 4, K-major weight scales", 4));
  configs.push_back(make_config<C128x32K, true>("coop 128x32, data-parallel, K-major weight scales", 1));

  std::string detail;
  std::printf("## Decode sizes (operands swapped), weight GB/s\n\n");
  bench(configs, {4, 8, 16, 32, 64}, /*flops=*/false, lt, stream, detail);

  // Prefill and training sizes: is cuBLASLt's ~1.2 PFLOP/s (docs/BENCHMARKS.md, 8K prefill) the
  // ceiling? Operands as they come (no swap), weight scales in both layouts, one and two CTAs per
  // cluster (the pair shares the weight tile's loads), 128x128 and 128x256 tiles, stream-K.
  using Cluster1 = Shape<_1, _1, _1>;
  using Cluster2 = Shape<_1, _2, _1>;
  using L128x128 = PlainGemm<128, 128, Cluster1, Coop, CoopEpi, Persistent, false>;
  using L128x128K = PlainGemm<128, 128, Cluster1, Coop, CoopEpi, Persistent, true>;
  using L128x128KC2 = PlainGemm<128, 128, Cluster2, Coop, CoopEpi, Persistent, true>;
  using L128x256K = PlainGemm<128, 256, Cluster1, Coop, CoopEpi, Persistent, true>;
  using L128x128KS = PlainGemm<128, 128, Cluster1, Coop, CoopEpi, StreamK, true>;
  std::vector<Config> large;
  large.push_back(make_config<L128x128, false>("coop 128x128, persistent", 1));
  large.push_back(make_config<L128x128K, false>("coop 128x128, persistent, K-major weight scales", 1));
  large.push_back(make_config<L128x128KC2, false>("coop 128x128, cluster 1x2, persistent, K-major weight scales", 1));
  large.push_back(make_config<L128x256K, false>("coop 128x256, persistent, K-major weight scales", 1));
  large.push_back(make_config<L128x128KS, true>("coop 128x128, stream-K, K-major weight scales", 0));
  std::printf("\n## Prefill / training sizes (operands as they come), TFLOP/s\n\n");
  bench(large, {1024, 8192}, /*flops=*/true, lt, stream, detail);

  // Decode at batch 128-256. Ping-pong gives each warpgroup a whole tile, so its 128x128 would hold
  // two fp32 accumulators of 128 values per thread (the block-scaled mainloop promotes into a
  // second one): past the register file; the cooperative schedule splits that tile between two.
  using P128x64K = SwapAbGemm<128, 64, Ping, PingEpi, Persistent, true>;
  using C128x64K = SwapAbGemm<128, 64, Coop, CoopEpi, StreamK, true>;
  using C128x128K = SwapAbGemm<128, 128, Coop, CoopEpi, StreamK, true>;
  std::vector<Config> mid;
  mid.push_back(make_config<P128x64K, false>("pingpong 128x64, K-major weight scales", 1));
  mid.push_back(make_config<C128x64K, true>("coop 128x64, data-parallel, K-major weight scales", 1));
  mid.push_back(make_config<C128x64K, true>("coop 128x64, split-K 2, K-major weight scales", 2));
  mid.push_back(make_config<C128x128K, true>("coop 128x128, data-parallel, K-major weight scales", 1));
  mid.push_back(make_config<C128x128K, true>("coop 128x128, split-K 2, K-major weight scales", 2));
  mid.push_back(make_config<L128x128K, false>("plain coop 128x128, persistent, K-major weight scales", 1));
  mid.push_back(make_config<L128x256K, false>("plain coop 128x256, persistent, K-major weight scales", 1));
  std::printf("\n## Decode at batch 128-256, weight GB/s\n\n");
  bench(mid, {128, 256}, /*flops=*/false, lt, stream, detail);

  std::printf("\nEvery configuration (us per call, weight GB/s or TFLOP/s, worst element's |CUTLASS - cuBLASLt| / (|cuBLASLt| + 0.1%% max)):\n\n");
  std::printf("| shape | M | configuration | us | rate | rel. diff |\n|---|---:|---|---:|---:|---:|\n%s", detail.c_str());
  return 0;
}
