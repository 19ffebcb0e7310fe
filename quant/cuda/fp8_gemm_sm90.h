// CUTLASS 4.5's Hopper FP8 GEMM with software block scaling: TMA loads, a producer warp feeding
// two consumer warpgroups through mbarriers, warpgroup MMAs on E4M3 from shared memory, the fp32
// partial sums promoted with both scales every 128-wide K block (as cuBLASLt and DeepGEMM do).
//   - decode batch sizes (Mp <= 64), where cuBLASLt's block-scaled kernel reads the weights at
//     ~1.1-2.9 TB/s (docs/BENCHMARKS.md): the operands are swapped, D^T [Np, Mp] = W X^T, so the
//     weight rows fill the MMA's 128-row side and the few tokens its 16/32-wide N side; ping-pong
//     warpgroups, persistent CTAs, no K split (scripts/cutlass-fp8-bench measured that best);
//   - prefill and training sizes (Mp > 64), where cuBLASLt runs at ~1.2 PFLOP/s: Y = X W^T as
//     they come, 128x128 tiles, persistent CTAs.
//
// Layouts are the engine's own, no copies: W [Np, Kp] E4M3 with scales [Np/128, Kp/128] (K
// fastest), X [Mp, Kp] E4M3 with 1x128 group scales [Kp/128, Mp] (M fastest), Y [Mp, Np] bf16.
// Np, Kp multiples of 128 and Mp of 4 (the padding fp8_gemm's operands carry).
//
// fp8_gemm dispatches M = 9-64 here (FP8RL_CUTLASS_SMALL_M=0: cuBLASLt), and M > 64 with
// FP8RL_CUTLASS_LARGE_M=1 (see quant/fp8_gemm.h); scripts/cutlass-fp8-bench times the same
// kernels in more configurations.
// Built only with FlashInfer's wheel headers (they carry CUTLASS), for sm_90a.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace fp8rl::cuda {

inline constexpr int64_t kFp8GemmSm90MaxRows = 64;  // the swapped (decode) orientation up to here

struct Fp8GemmSm90Args {
  const void* w = nullptr;         // [Np, Kp] E4M3
  const float* w_scale = nullptr;  // [Np/128, Kp/128]
  const void* x = nullptr;         // [Mp, Kp] E4M3
  const float* x_scale = nullptr;  // [Kp/128, Mp]
  void* y = nullptr;               // [Mp, Np] bf16
  int64_t Mp = 0, Np = 0, Kp = 0;
  int num_sms = 132;               // multiprocessors the persistent CTAs cover
};

// False (nothing launched) when CUTLASS cannot run these shapes or the workspace (K-split
// partial sums: at most ~4.3 MB for M <= 64; none above) is too small.
bool fp8_gemm_sm90(const Fp8GemmSm90Args& a, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace fp8rl::cuda
