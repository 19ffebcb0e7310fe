// An FP8 projection's input made by the op before it, in the layout the projection's GEMM reads.
//
// A linear that quantizes its input (quant/fp8_model.h) may let the kernel that produces that
// input write it quantized, saving a kernel and a BF16 round trip per call: the norms and SiLU-mul
// do so inside quant/ (Linear::forward_rms_normed, ...), and attention's output, made outside
// quant/, through this description (Linear::group_fp8_input, Attention::forward_rotating_quantized).
// Core-level, so that the engine's attention (rollout/) can fill it without depending on quant/.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace fp8rl::model {

// x [rows, cols] in 1 x 128 groups along cols, as quant/scaling.h's group scaling does it, bit
// for bit: per group s = amax / fp8_max, 1 for an all-zero group, rounded up to a power of two
// when pow2; q = fp8(x * (1 / s)) with saturation. The layout of quant::Fp8Activation:
//   data  [rows_padded, cols_padded] `dtype`, zero padded;
//   scale [cols_padded / 128, rows_padded] float32, K-block-major (cuBLASLt's); padding groups 1.
// The consumer fills the request (every field but data and scale); the producer the rest.
struct GroupFp8Input {
  int64_t rows = 0, cols = 0, rows_padded = 0, cols_padded = 0;
  at::ScalarType dtype = at::kFloat8_e4m3fn;  // or at::kFloat8_e5m2
  float fp8_max = 448.0f;
  bool pow2 = false;
  at::Tensor nonfinite;    // int32 [1] on the device, set to 1 when x holds NaN or inf; or undefined
  at::Tensor data, scale;  // the producer's output
};

}  // namespace fp8rl::model
