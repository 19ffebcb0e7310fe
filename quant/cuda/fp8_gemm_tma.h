// The engine's entry to the TMA + wgmma block-scaled FP8 GEMM for decode sizes
// (quant/cuda/fp8_gemm_tma.cuh says how it works): y [Mp, Np] bf16 = x [Mp, Kp] w [Np, Kp]^T
// with the engine's layouts, W E4M3 with scales [Np/128, Kp/128], X E4M3 with 1x128 group
// scales [Kp/128, Mp], Mp <= 64 a multiple of 4, Np and Kp multiples of 128 (the padding
// fp8_gemm's operands carry). fp8_gemm dispatches Mp = 9-64 here (quant/fp8_gemm.h says when).
// Built for sm_90a only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fp8rl::cuda {

inline constexpr int64_t kFp8GemmTmaMaxRows = 64;

struct Fp8GemmTmaArgs {
  const void* w = nullptr;         // [Np, Kp] E4M3
  const float* w_scale = nullptr;  // [Np/128, Kp/128]
  const void* x = nullptr;         // [Mp, Kp] E4M3
  const float* x_scale = nullptr;  // [Kp/128, Mp]
  void* y = nullptr;               // [Mp, Np] bf16
  int64_t Mp = 0, Np = 0, Kp = 0;
  int num_sms = 132;
};

// False (nothing launched) when the shapes or alignments are not the kernel's; throws
// std::runtime_error when a launch fails.
bool fp8_gemm_tma(const Fp8GemmTmaArgs& a, cudaStream_t stream);

}  // namespace fp8rl::cuda
