// Launchers of the FP8 scaling kernels (quant/scaling.h has the semantics; its CPU reference
// quantize_*_reference is what these must match bit for bit). Plain pointers, no ATen.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "core/util/pdl.h"

namespace fp8rl::cuda {

// Whether a kernel quantizing `rows` rows for an FP8 projection lets the projection launch before
// its own wait (pdl_early_trigger, core/util/pdl.h). Only up to 4 rows: on against off, FP8 + FP8
// KV, H100, A/B calls in either order (docs/BENCHMARKS.md), decode tokens/s at batch 1 / 2 / 4
// 1.029-1.047x / 1.004-1.021x / 1.004-1.026x; with every row count triggering first, batch 8
// measured 0.983-0.987x (graph step 4.21 -> 4.31 ms) and 16 / 64 0.997-1.018x.
constexpr int64_t kEarlyTriggerMaxRows = 4;
inline bool early_trigger(int64_t rows) { return rows <= kEarlyTriggerMaxRows && pdl_early_trigger(); }

struct QuantArgs {
  const void* x;        // [rows, cols] row-major, float32 or bfloat16
  bool x_bf16;
  int64_t rows, cols;
  uint8_t* out;         // [rows_padded, cols_padded] fp8, padding written as zeros
  int64_t rows_padded, cols_padded;
  float* scale;         // layout per launcher below
  float fp8_max;
  bool e5m2;
  bool pow2;
  int* nonfinite;       // nullable; set to 1 when a NaN/inf input is seen
};

// One scale per tile_rows x tile_cols tile of the padded matrix, scale[tile_r * n_tile_cols + tile_c].
// Weights: block (128 x 128) and channel (1 x cols_padded); activations: token (1 x cols_padded).
void quantize_tiles(const QuantArgs& a, int64_t tile_rows, int64_t tile_cols, cudaStream_t stream);

// Activations, one scale per 1 x 128 group, written K-block-major: scale[kb * rows_padded + m];
// rows past `rows` (up to rows_padded) are zeros with scale 1.
// Fused: one warp per group loads, reduces amax, scales and stores in one pass.
void quantize_groups_1x128(const QuantArgs& a, cudaStream_t stream);

// One scale for the whole matrix: an amax pass (into *amax_bits, zero-initialised by the
// caller, as float bits) then a cast pass; scale[0] is written by the cast pass.
void quantize_tensor(const QuantArgs& a, unsigned* amax_bits, cudaStream_t stream);

// The producer of an FP8 GEMM's input fused with its quantization: 1x128 groups in
// quantize_groups_1x128's layout (out [rows_padded, cols_padded], scale[kb * rows_padded + m],
// padding rows and columns zeros with scale 1), or (per_token) one scale per row as quantize_tiles
// with 1 x cols_padded tiles makes it (rows_padded == rows, scale[m]). Bit for bit what the
// producer kernel of core/model/cuda/fused_inference.h followed by that quantization gives (the
// element formulas and the row reduction come from core/model/cuda/fused_rows.cuh). bfloat16 input.
struct ActQuantOut {
  uint8_t* out;
  float* scale;
  // cols % 8 == 0; cols_padded % 512 == 0 (groups) or % 128 == 0 (per token)
  int64_t rows, rows_padded, cols, cols_padded;
  float fp8_max;
  bool e5m2, pow2;
  int* nonfinite;  // nullable
  bool per_token = false;
};

// The residual add an RMSNorm may take first (rms_norm_quantize): the row normed is
// s = x + residual (rounded as ATen's add), stored to sum [rows, cols] contiguous. residual
// [rows, cols] with row stride residual_stride % 8 == 0, 16-byte aligned; null: no add.
struct ResidualAdd {
  const void* residual = nullptr;
  int64_t residual_stride = 0;
  void* sum = nullptr;
};

// rms_norm_rows (its one-block-per-row form: cols > 1024) of x [rows, cols] (row stride
// stride_n % 8 == 0; x and weight 16-byte aligned), or of x + add.residual, quantized.
void rms_norm_quantize(const void* x, int64_t stride_n, const void* weight, float eps, const ActQuantOut& o,
                       cudaStream_t stream, const ResidualAdd& add = {});

// silu_mul_rows of gate_up [rows, 2 cols] (gate first; row stride stride_n % 8 == 0, 16-byte
// aligned), quantized.
void silu_mul_quantize(const void* gate_up, int64_t stride_n, const ActQuantOut& o, cudaStream_t stream);

}  // namespace fp8rl::cuda
