// Device pieces of FP8 quantization shared by the scaling kernels (scaling.cu) and the fused
// producer + quantization kernels (fused_quant.cu): the scale rule and the conversion, so both
// give quantize_*_reference's bits (quant/scaling.cpp).
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

namespace fp8rl::cuda {

// The maximum of v over a block of THREADS threads (a multiple of 32, at most 1024); every
// thread calls it and gets the result. smem: THREADS / 32 floats of the caller's shared memory.
template <int THREADS>
__device__ __forceinline__ float block_max(float v, float* smem) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < THREADS / 32 ? smem[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) smem[0] = v;
  }
  __syncthreads();
  return smem[0];
}

// amax / fp8_max, 1 for an all-zero (or NaN) group; pow2 rounds it up to a power of two.
__device__ __forceinline__ float scale_from_amax(float amax, float fp8_max, bool pow2) {
  if (!(amax > 0.0f)) return 1.0f;
  float s = amax / fp8_max;
  if (s < 1.17549435e-38f) return 1.17549435e-38f;  // FLT_MIN: 1 / s stays finite (quant/scaling.cpp)
  if (!pow2) return s;
  unsigned bits = __float_as_uint(s);
  if (bits & 0x007FFFFFu) bits = (bits & 0x7F800000u) + 0x00800000u;
  return __uint_as_float(bits);
}

// v / s as v * (1 / s) (the reciprocal computed once per group, IEEE), saturating RNE.
__device__ __forceinline__ uint8_t to_fp8(float v, float inv_s, bool e5m2) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v * inv_s, __NV_SATFINITE, e5m2 ? __NV_E5M2 : __NV_E4M3));
}

// One 1 x 128 group held by a half-warp, 8 values per lane (lane l16 of the half: columns
// [8 l16, 8 l16 + 8) of the group): the group's amax by shuffles within the half-warp, its
// scale into *scale (lane 0 of the half), the 8 FP8 bytes into out8 (8-byte aligned). Every
// lane of the warp must call it (the shuffles span the warp); `store` false only joins them.
__device__ __forceinline__ void quantize_group_half_warp(const float (&v)[8], bool store, float fp8_max, bool e5m2,
                                                         bool pow2, float* scale, uint8_t* out8, int* nonfinite) {
  float amax = 0.0f;
  bool bad = false;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    bad |= !isfinite(v[j]);
    amax = fmaxf(amax, fabsf(v[j]));
  }
  if (store && bad && nonfinite) atomicExch(nonfinite, 1);
  // xor offsets below 16 stay within each half-warp: one amax per group.
  for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (!store) return;
  const float s = scale_from_amax(amax, fp8_max, pow2);
  const float inv = 1.0f / s;
  if (threadIdx.x % 16 == 0) *scale = s;
  alignas(8) uint8_t q[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) q[j] = to_fp8(v[j], inv, e5m2);
  *reinterpret_cast<uint2*>(out8) = *reinterpret_cast<const uint2*>(q);
}

}  // namespace fp8rl::cuda
