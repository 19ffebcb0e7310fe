// `fp8rl bench gemm`: TFLOP/s of BF16 (cuBLAS via ATen) and of our FP8 GEMMs (cuBLASLt:
// per-tensor, per-channel, 128x128 block) on the linear shapes of Qwen3 models, in one run.
//
// Each cell is the median of `reps` timed calls (CUDA events around each call, after warm-up),
// rotating through enough weight copies that they do not sit in L2 (50 MB on H100), so small-M
// shapes are timed as the weight-streaming problem they are in decode.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fp8rl {

struct GemmBenchOptions {
  std::vector<std::string> models{"0.6b", "8b", "32b"};  // Qwen3 presets (core/recipe/model_presets.h)
  std::vector<int64_t> ms{1, 16, 64, 256, 1024, 4096};   // tokens per GEMM
  int reps = 30;
  bool backward = true;  // also time dX = dY W through the frozen FP8 weight, two ways
};

// Runs the benchmark on the current CUDA device and returns the report as Markdown (tables
// plus a summary of FP8 block vs BF16 ratios). Throws RuntimeFailure without CUDA.
std::string run_gemm_bench(const GemmBenchOptions& options);

}  // namespace fp8rl
