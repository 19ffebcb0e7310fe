#include "apps/bench_gemm.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iomanip>
#include <sstream>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/recipe/model_presets.h"
#include "quant/fp8_gemm.h"
#include "quant/scaling.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#endif

namespace fp8rl {

using namespace quant;  // the benchmark exercises quant/ throughout

#ifndef FP8RL_WITH_CUDA

std::string run_gemm_bench(const GemmBenchOptions&) {
  throw RuntimeFailure("bench gemm needs a CUDA build of fp8rl (scripts/setup.sh with FP8RL_CUDA=ON) and a GPU");
}

#else

namespace {

struct Shape {
  std::string model, proj;
  int64_t n, k;
};

std::vector<Shape> linear_shapes(const std::string& model) {
  auto s = recipe::qwen3_preset(model);
  if (!s) throw ConfigError("bench gemm: unknown model preset '" + model + "'");
  const int64_t h = s->hidden_size, q = s->num_attention_heads * s->head_dim, kv = s->num_key_value_heads * s->head_dim;
  return {{model, "q_proj", q, h},  {model, "k/v_proj", kv, h},           {model, "o_proj", h, q},
          {model, "gate/up_proj", s->intermediate_size, h}, {model, "down_proj", h, s->intermediate_size}};
}

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw RuntimeFailure(cat("bench gemm: ", what, ": ", cudaGetErrorString(e)));
}

// Median milliseconds of fn(i) over reps calls, each between its own pair of events.
double median_ms(const std::function<void(int)>& fn, int reps) {
  for (int i = 0; i < 3; ++i) fn(i);
  auto stream = at::cuda::getCurrentCUDAStream();
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(reps));
  for (auto& e : ev) cuda_check(cudaEventCreate(&e), "cudaEventCreate");
  for (int i = 0; i < reps; ++i) {
    cuda_check(cudaEventRecord(ev[2 * i], stream), "cudaEventRecord");
    fn(i);
    cuda_check(cudaEventRecord(ev[2 * i + 1], stream), "cudaEventRecord");
  }
  cuda_check(cudaEventSynchronize(ev.back()), "cudaEventSynchronize");
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    float t = 0;
    cuda_check(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[reps / 2];
}

// Median milliseconds per call of fn when `calls` calls (rotating copies) are captured in one
// CUDA graph and replayed: GPU time without the host's launch overhead, as decode under CUDA
// graphs sees it.
double graph_median_ms(const std::function<void(int)>& fn, int calls, int reps) {
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  c10::cuda::CUDAStreamGuard guard(side);
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  for (int i = 0; i < calls; ++i) fn(i);
  graph.capture_end();
  const double ms = median_ms([&](int) { graph.replay(); }, reps);
  return ms / calls;
}

// Enough copies of a weight of `bytes` to stream ~256 MB per rotation (5x the H100's L2).
int copies_for(int64_t bytes) {
  return static_cast<int>(std::clamp<int64_t>((256ll << 20) / std::max<int64_t>(bytes, 1), 1, 64));
}

std::string fmt_num(double v, int prec = 1) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(prec) << v;
  return os.str();
}

double geomean(const std::vector<double>& v) {
  if (v.empty()) return NAN;
  double s = 0;
  for (double x : v) s += std::log(x);
  return std::exp(s / static_cast<double>(v.size()));
}

}  // namespace

std::string run_gemm_bench(const GemmBenchOptions& o) {
  if (!at::cuda::is_available()) throw RuntimeFailure("bench gemm: no CUDA device");
  FP8RL_CHECK(o.reps >= 3, "bench gemm: reps must be >= 3");
  c10::InferenceMode inference;  // no autograd bookkeeping in timed calls
  const auto dev = at::TensorOptions().device(at::kCUDA);
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, at::cuda::current_device()), "cudaGetDeviceProperties");

  std::ostringstream md;
  md << "Device: " << prop.name << ". Median of " << o.reps
     << " calls per cell (CUDA events), weights rotated through >= 256 MB of copies. TFLOP/s = 2MNK / time.\n"
     << "FP8 columns time the GEMM alone on pre-quantized operands; `block+q` adds the 1x128 activation quantization "
        "kernel that precedes every FP8 linear.\n\n"
     << "Graph columns replay the same calls captured in a CUDA graph: GPU time without host launch overhead "
        "(how decode runs).\n\n"
     << "| model | proj | M | N | K | BF16 | FP8 tensor | FP8 channel | FP8 block | block+q | block/BF16 | BF16 graph "
        "| block+q graph | graph ratio |\n"
     << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  std::ostringstream bwd;
  bwd << "| model | proj | M | dequant + BF16 (us) | FP8 transpose + quant + FP8 (us) | FP8 / dequant |\n"
      << "|---|---|---:|---:|---:|---:|\n";
  std::vector<double> big_ratio, small_ratio, bwd_ratio, graph_big, graph_small;
  // Small M (decode): the weight bytes each kernel reads per second under CUDA graphs.
  std::ostringstream small;
  // CUTLASS's sm90 kernel (M <= 64) when built with it; M 9-64 rows only then.
  const bool with_sm90 = fp8_gemm_sm90_built() && at::cuda::getCurrentDeviceProperties()->major == 9;
  small << "| model | proj | M | N | K | BF16 GB/s | FP8 cuBLASLt GB/s | FP8 CUDA-core GEMV GB/s | FP8 tensor-core GEMV GB/s "
           "| tensor-core GEMV / cuBLASLt | tensor-core GEMV / BF16 | FP8 CUTLASS sm90 GB/s | CUTLASS / cuBLASLt |\n"
        << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

  for (const auto& model : o.models) {
    for (const Shape& s : linear_shapes(model)) {
      // Weights: bf16 copies and FP8 copies in each scaling (quantized from the same values).
      const int nb = copies_for(s.n * s.k * 2), nf = copies_for(s.n * s.k);
      std::vector<at::Tensor> wb;
      for (int i = 0; i < nb; ++i) wb.push_back((at::randn({s.n, s.k}, dev) * 0.02).to(at::kBFloat16));
      std::vector<Fp8Weight> wt, wc, wk;
      for (int i = 0; i < nf; ++i) {
        const at::Tensor& src = wb[static_cast<size_t>(i % nb)];
        wt.push_back(quantize_weight(src, WeightScaling::tensor, Fp8Format::e4m3, false));
        wc.push_back(quantize_weight(src, WeightScaling::channel, Fp8Format::e4m3, false));
        wk.push_back(quantize_weight(src, WeightScaling::block, Fp8Format::e4m3, false));
      }
      for (int64_t m : o.ms) {
        at::Tensor x = at::randn({m, s.k}, dev).to(at::kBFloat16);
        Fp8Activation xt = quantize_activation(x, ActScaling::tensor, Fp8Format::e4m3, false);
        Fp8Activation xc = quantize_activation(x, ActScaling::token, Fp8Format::e4m3, false);
        Fp8Activation xk = quantize_activation(x, ActScaling::group, Fp8Format::e4m3, false);
        const double flop = 2.0 * static_cast<double>(m) * static_cast<double>(s.n) * static_cast<double>(s.k);
        auto tflops = [&](double ms) { return flop / (ms * 1e-3) / 1e12; };
        const double t_bf16 = median_ms([&](int i) { at::mm(x, wb[static_cast<size_t>(i % nb)].t()); }, o.reps);
        const double t_tensor = median_ms([&](int i) { fp8_gemm(xt, wt[static_cast<size_t>(i % nf)]); }, o.reps);
        const double t_channel = median_ms([&](int i) { fp8_gemm(xc, wc[static_cast<size_t>(i % nf)]); }, o.reps);
        const double t_block = median_ms([&](int i) { fp8_gemm(xk, wk[static_cast<size_t>(i % nf)]); }, o.reps);
        const double t_block_q = median_ms(
            [&](int i) {
              fp8_gemm(quantize_activation(x, ActScaling::group, Fp8Format::e4m3, false), wk[static_cast<size_t>(i % nf)]);
            },
            o.reps);
        const double ratio = t_bf16 / t_block_q;
        const int graph_calls = std::min(nf, 16);
        const double g_bf16 = graph_median_ms([&](int i) { at::mm(x, wb[static_cast<size_t>(i % nb)].t()); },
                                              graph_calls, o.reps);
        const double g_block_q = graph_median_ms(
            [&](int i) {
              fp8_gemm(quantize_activation(x, ActScaling::group, Fp8Format::e4m3, false), wk[static_cast<size_t>(i % nf)]);
            },
            graph_calls, o.reps);
        if (m >= 1024) {
          big_ratio.push_back(ratio);
          graph_big.push_back(g_bf16 / g_block_q);
        } else if (m <= 64) {
          small_ratio.push_back(ratio);
          graph_small.push_back(g_bf16 / g_block_q);
        }
        md << "| " << s.model << " | " << s.proj << " | " << m << " | " << s.n << " | " << s.k << " | "
           << fmt_num(tflops(t_bf16)) << " | " << fmt_num(tflops(t_tensor)) << " | " << fmt_num(tflops(t_channel))
           << " | " << fmt_num(tflops(t_block)) << " | " << fmt_num(tflops(t_block_q)) << " | " << fmt_num(ratio, 2)
           << " | " << fmt_num(tflops(g_bf16)) << " | " << fmt_num(tflops(g_block_q)) << " | "
           << fmt_num(g_bf16 / g_block_q, 2) << " |\n";

        if (m <= 8 || (with_sm90 && m <= 64)) {
          const auto rotate = [&](int i) -> const Fp8Weight& { return wk[static_cast<size_t>(i % nf)]; };
          const int calls = std::min(nf, 16);
          const double g_lt = graph_median_ms(
              [&](int i) { fp8_gemm_small_m(xk, rotate(i), at::kBFloat16, SmallMKernel::cublaslt); }, calls, o.reps);
          const double g_tc =
              m <= 8 ? graph_median_ms(
                           [&](int i) { fp8_gemm_small_m(xk, rotate(i), at::kBFloat16, SmallMKernel::tensor_cores); },
                           calls, o.reps)
                     : NAN;
          const double g_sm90 =
              with_sm90 ? graph_median_ms(
                              [&](int i) { fp8_gemm_small_m(xk, rotate(i), at::kBFloat16, SmallMKernel::cutlass_sm90); },
                              calls, o.reps)
                        : NAN;
          const double g_cc =
              m <= 4 ? graph_median_ms(
                           [&](int i) { fp8_gemm_small_m(xk, rotate(i), at::kBFloat16, SmallMKernel::cuda_cores); },
                           calls, o.reps)
                     : NAN;
          const double fp8_bytes = static_cast<double>(s.n) * static_cast<double>(s.k);
          auto gbs = [](double bytes, double ms) { return bytes / (ms * 1e-3) / 1e9; };
          small << "| " << s.model << " | " << s.proj << " | " << m << " | " << s.n << " | " << s.k << " | "
                << fmt_num(gbs(2 * fp8_bytes, g_bf16), 0) << " | " << fmt_num(gbs(fp8_bytes, g_lt), 0) << " | "
                << (m <= 4 ? fmt_num(gbs(fp8_bytes, g_cc), 0) : std::string("-")) << " | "
                << (m <= 8 ? fmt_num(gbs(fp8_bytes, g_tc), 0) : std::string("-")) << " | "
                << (m <= 8 ? fmt_num(g_lt / g_tc, 2) : std::string("-")) << " | "
                << (m <= 8 ? fmt_num(g_bf16 / g_tc, 2) : std::string("-")) << " | "
                << (with_sm90 ? fmt_num(gbs(fp8_bytes, g_sm90), 0) : std::string("-")) << " | "
                << (with_sm90 ? fmt_num(g_lt / g_sm90, 2) : std::string("-")) << " |\n";
        }

        if (o.backward && m >= 1024) {
          // dX [M, K] = dY [M, N] @ W [N, K] through the frozen FP8 weight, two ways:
          //   (a) dequantize W to bf16 for this layer, then a BF16 GEMM;
          //   (b) transpose the FP8 bytes and block scales (exact for 128x128 blocks), quantize dY
          //       in 1x128 groups along N, then the FP8 block GEMM.
          at::Tensor dy = at::randn({m, s.n}, dev).to(at::kBFloat16);
          const double t_deq = median_ms(
              [&](int i) { at::mm(dy, dequantize(wk[static_cast<size_t>(i % nf)]).to(at::kBFloat16)); }, o.reps);
          const double t_fp8 = median_ms(
              [&](int i) {
                Fp8Weight wt_t = transpose_weight(wk[static_cast<size_t>(i % nf)]);
                fp8_gemm(quantize_activation(dy, ActScaling::group, Fp8Format::e4m3, false), wt_t);
              },
              o.reps);
          bwd_ratio.push_back(t_deq / t_fp8);
          bwd << "| " << s.model << " | " << s.proj << " | " << m << " | " << fmt_num(t_deq * 1e3) << " | "
              << fmt_num(t_fp8 * 1e3) << " | " << fmt_num(t_deq / t_fp8, 2) << " |\n";
        }
        log::info(cat("bench gemm: ", s.model, " ", s.proj, " M=", m, " bf16 ", fmt_num(tflops(t_bf16)),
                      " TFLOP/s, fp8 block+q ", fmt_num(tflops(t_block_q)), " TFLOP/s"));
      }
    }
  }
  std::ostringstream out;
  const auto ratio_of = [](const std::vector<double>& v) {
    return v.empty() ? std::string("(no such M)") : fmt_num(geomean(v), 2) + "x";
  };
  out << md.str() << "\nSummary (geometric means of BF16 time / FP8 block+q time): M >= 1024: " << ratio_of(big_ratio)
      << ", M <= 64: " << ratio_of(small_ratio) << ". Under CUDA graphs: M >= 1024: " << ratio_of(graph_big)
      << ", M <= 64: " << ratio_of(graph_small) << ".\n";
  out << "\nSmall M (decode), CUDA graphs: weight bytes read per second (BF16 reads 2 bytes per weight, FP8 one); "
         "the FP8 kernels get the same pre-quantized operands:\n\n"
      << small.str();
  if (o.backward)
    out << "\nBackward through the frozen FP8 weight (dX = dY W), M >= 1024:\n\n"
        << bwd.str() << "\nGeometric mean dequant time / FP8 time: " << fmt_num(geomean(bwd_ratio), 2) << "x.\n";
  return out.str();
}

#endif  // FP8RL_WITH_CUDA

}  // namespace fp8rl
