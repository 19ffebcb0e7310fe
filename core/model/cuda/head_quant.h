// Per-head FP8 (E4M3) quantization of attention inputs: what an FP8 attention kernel with one
// scale per head (FlashInfer's sm90 FP8 prefill, core/model/cuda/hopper_prefill.h) takes.
// Plain pointers, no ATen; the ATen side and the reference the kernels are tested against bit for
// bit are quantize_heads / its CPU path (core/model/attention.h).
//
// x: `n` tokens x `heads` rows of `dim` elements, row (i, h) at element offset i * stride_n +
// h * stride_h (q, k and v are views of one fused projection). For every head h:
//   amax[h]   = max over tokens and dims of |x|   (NaN if any element is NaN),
//   scale[h]  = amax[h] / 448, or 1 where amax[h] is 0 (a head of zeros),
//   out[i, h] = E4M3(x[i, h] / scale[h]) saturated to +-448 (kv_e4m3, convert.cuh),
// out [n, heads, dim] contiguous bytes, scale [heads] float32.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace fp8rl::cuda {

struct HeadQuantArgs {
  const void* x;
  int64_t n, heads, dim, stride_n, stride_h;  // elements
  bool bf16;                                  // bfloat16 x, else float16
  float* amax;                                // [heads] float32 scratch, zeroed by the caller
  float* scale;                               // [heads] float32 out
  uint8_t* out;                               // [n, heads, dim] E4M3 bytes out
};

// Takes dim % 8 == 0, strides multiples of 8 and a 16-byte aligned x; returns false and launches
// nothing otherwise (the caller runs the ATen ops). Two kernels: the amax, then the bytes.
bool quantize_heads_rows(const HeadQuantArgs& a, cudaStream_t stream);

}  // namespace fp8rl::cuda
