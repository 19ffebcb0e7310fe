// Launchers of the FP8 scaling kernels (quant/scaling.h has the semantics; its CPU reference
// quantize_*_reference is what these must match bit for bit). Plain pointers, no ATen.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace fp8rl::cuda {

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

}  // namespace fp8rl::cuda
