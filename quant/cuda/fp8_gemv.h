// The small-M FP8 GEMM (decode at batch 1-8): y [M, N] = x W^T with 1x128-group FP8 activations
// and 128x128-block FP8 weights, E4M3, float32 accumulation. Semantics are fp8_gemm's for that
// pairing (quant/fp8_gemm.h):
//   y[m, n] = sum_kb  x_scale[kb, m] * w_scale[n / 128, kb] * sum_{k in block kb} qx[m, k] qw[n, k]
// The tensor-core kernel also runs per-output-channel weights with per-token activations
// (Fp8GemvArgs::channel): y[m, n] = x_scale[m] * w_scale[n] * sum_k qx[m, k] qw[n, k].
// Its reference is fp8_gemm's CPU path (the dequantized product) and cuBLASLt's block-scaled GEMM
// (tests/quant/gpu_test_quant.cpp).
//
// Why a kernel of our own: at M <= 4 the GEMM is a pass over the weight bytes, and cuBLASLt's
// block-scaled FP8 kernels read them at ~30% of HBM bandwidth there (docs/BENCHMARKS.md, `bench
// gemm` at M = 1), so FP8 weights were barely faster than BF16 ones at batch 1. Both kernels
// below stream the weight bytes in 16-byte loads; the x operand (M rows of K bytes) is read by
// every warp and stays in L1/L2. fp8_gemv.cu describes how each splits the work.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace fp8rl::cuda {

inline constexpr int64_t kFp8GemvMaxRows = 4;     // fp8_gemv_block (CUDA cores)
inline constexpr int64_t kFp8GemvMmaMaxRows = 8;  // fp8_gemv_block_mma (tensor cores)

struct Fp8GemvArgs {
  const uint8_t* w;      // [Np, Kp] E4M3, Np % 128 == 0, Kp % 512 == 0 (channel: % 128; quant/scaling.h padding)
  const float* w_scale;  // [Np / 128, Kp / 128] (channel: [Np])
  const uint8_t* x;      // [Mp, Kp] E4M3
  const float* x_scale;  // [Kp / 128, Mp] (K-block-major, cuBLASLt's layout; channel: [M], one per token)
  void* y;               // [M, N] row-major, bfloat16 or float32
  bool y_bf16;
  int64_t M, N, Np, Kp, Mp;
  bool channel = false;  // per-output-channel weight scales x per-token activation scales (tensor cores only)
};

// Enqueue the GEMV on `stream`; throw std::runtime_error on a launch error. Two kernels:
//   fp8_gemv_block      CUDA cores: weights and activations dequantized to float in registers,
//                       1 <= M <= kFp8GemvMaxRows (its ALU work grows with M: compute-bound by 4);
//   fp8_gemv_block_mma  tensor cores (mma.sync m16n8k32 E4M3, sm_89+): the bytes go into the mma
//                       as loaded (on Hopper ptxas widens them to fp16 for HMMA; memory-bound
//                       all the same at this M); 1 <= M <= kFp8GemvMmaMaxRows.
void fp8_gemv_block(const Fp8GemvArgs& a, cudaStream_t stream);
void fp8_gemv_block_mma(const Fp8GemvArgs& a, cudaStream_t stream);

// K blocks each warp of fp8_gemv_block_mma loads before it computes: 3 by default, 2 with
// FP8RL_GEMV_DEPTH=2 (read on first use); deeper issues more of the weights before the kernel's
// dependent-launch wait. Same bits at either depth. The setter is for tests and benchmarks.
int fp8_gemv_mma_depth();
void set_fp8_gemv_mma_depth(int depth);

}  // namespace fp8rl::cuda
