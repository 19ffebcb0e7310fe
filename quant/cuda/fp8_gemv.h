// The small-M FP8 GEMM (decode at batch 1-4): y [M, N] = x W^T with 1x128-group FP8 activations
// and 128x128-block FP8 weights, E4M3, float32 accumulation. Semantics are fp8_gemm's for that
// pairing (quant/fp8_gemm.h):
//   y[m, n] = sum_kb  x_scale[kb, m] * w_scale[n / 128, kb] * sum_{k in block kb} qx[m, k] qw[n, k]
// Its reference is fp8_gemm's CPU path (the dequantized product) and cuBLASLt's block-scaled GEMM
// (tests/quant/gpu_test_quant.cpp).
//
// Why a kernel of our own: at M <= 4 the GEMM is a pass over the weight bytes, and cuBLASLt's
// block-scaled FP8 kernels read them at ~30% of HBM bandwidth there (docs/BENCHMARKS.md, `bench
// gemm` at M = 1), so FP8 weights were barely faster than BF16 ones at batch 1. Here one warp
// owns one or two output rows and streams their bytes in 16-byte loads, 512 K-elements per warp
// step, dequantizes in registers and keeps M x rows float accumulators; a warp reduction ends it.
// The x operand (M rows of K bytes) is read by every warp and stays in L1/L2.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace fp8rl::cuda {

inline constexpr int64_t kFp8GemvMaxRows = 4;  // M above this goes to cuBLASLt

struct Fp8GemvArgs {
  const uint8_t* w;      // [Np, Kp] E4M3, Np % 128 == 0, Kp % 512 == 0 (quant/scaling.h padding)
  const float* w_scale;  // [Np / 128, Kp / 128]
  const uint8_t* x;      // [Mp, Kp] E4M3
  const float* x_scale;  // [Kp / 128, Mp] (K-block-major, cuBLASLt's layout)
  void* y;               // [M, N] row-major, bfloat16 or float32
  bool y_bf16;
  int64_t M, N, Np, Kp, Mp;
};

// Enqueues the GEMV on `stream`. Requires 1 <= M <= kFp8GemvMaxRows; throws std::runtime_error
// on a launch error.
void fp8_gemv_block(const Fp8GemvArgs& a, cudaStream_t stream);

}  // namespace fp8rl::cuda
