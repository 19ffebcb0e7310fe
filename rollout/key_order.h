// The order in which the paged decode kernel's scores MMA (rollout/cuda/paged_decode.cu) takes
// the head dims of an FP8 cache's keys. The MMA sums over its k index, so any permutation of the
// dims gives the same dot products as long as the keys and q's fragments take the same one; this
// one lets a lane read its part of a key row in one or a few 16-byte shared-memory loads (the
// natural order needs a two-byte load per operand pair: 32 loads a row at head_dim 128). Plain
// header, usable by nvcc and g++, so the CPU tests check that it is a permutation and that its
// loads are whole 16-byte chunks free of bank conflicts (tests/rollout/test_key_order.cpp).
//
// Lane t (= lane % 4) of an m16n8k16 fragment, at 16-dim step kk of the D / 16, takes the four
// dims key_dim<D>(t, kk) .. + 3: its A operand pairs a0 | a2 (and q's B pairs b0 | b1) in one
// 32-bit word. A lane's D / 16 words are contiguous in whole 16-byte chunks from head_dim 64 up;
// from 128 up lane t takes chunks 2t and 2t + 1 of each 128-byte span, so the 8 lanes a
// shared-memory phase serves (4 lanes each of rows fr and fr + 1) hit distinct banks in both of
// the kernel's layouts (rows padded by 16 bytes, or unpadded with chunk c of row r at c ^ (r % 8)).
#pragma once

#if defined(__CUDACC__)
#define FP8RL_KEY_ORDER_FN __host__ __device__ __forceinline__
#else
#define FP8RL_KEY_ORDER_FN inline
#endif

namespace fp8rl::rollout {

// D in {16, 32, 64, 128, 256}, t in [0, 4), kk in [0, D / 16): the first of the four dims.
template <int D>
FP8RL_KEY_ORDER_FN int key_dim(int t, int kk) {
  if constexpr (D >= 128) {
    const int c = kk / 4;  // the lane's 16-byte chunk
    return 16 * (8 * (c / 2) + 2 * t + c % 2) + 4 * (kk % 4);
  } else {
    return t * (D / 4) + 4 * kk;
  }
}

}  // namespace fp8rl::rollout
