// Division by a divisor fixed for a whole kernel (a KV cache's block size), by one multiply-high,
// an add and a shift instead of an integer division. Why: the paged decode kernel maps every
// 16-byte copy's key position t to (t / block_size, t % block_size); compiled as a division of
// its int64 fields, that and the 64-bit offsets after it took ~65 instructions per copy (SASS).
// With this, and each thread's rows and chunk fixed once, the kernel at Qwen3-8B's shape, batch
// 256, executes 23% fewer instructions with an FP8 cache and 35% fewer with bf16 (Nsight Compute,
// H100), and runs 1.02-1.18x faster (docs/BENCHMARKS.md). Plain header: no CUDA include, usable
// by nvcc and g++, so the CPU tests check the same arithmetic the kernel runs.
//
// The method (Granlund and Montgomery, "Division by invariant integers using multiplication",
// 1994): with l = ceil(log2 d) and m = 2^32 + mul = floor(2^(32+l) / d) + 1,
//   n / d = floor(n * m / 2^(32+l)) = (umulhi(n, mul) + n) >> l
// for every n < 2^31 (the sum then fits 32 bits; m * d exceeds 2^(32+l) by at most d, and
// n * d < 2^(32+l), so the error stays under one step of the floor).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FP8RL_FAST_DIVMOD_FN __host__ __device__ __forceinline__
#else
#define FP8RL_FAST_DIVMOD_FN inline
#endif

namespace fp8rl::rollout {

struct FastDivmod {
  uint32_t divisor = 1, mul = 0, shift = 0;

  FastDivmod() = default;
  // d in [1, 2^31).
  FP8RL_FAST_DIVMOD_FN explicit FastDivmod(uint32_t d) : divisor(d) {
    while (shift < 31 && (1u << shift) < d) ++shift;  // ceil(log2 d)
    mul = static_cast<uint32_t>((((uint64_t{1} << shift) - d) << 32) / d + 1);
  }

  // n in [0, 2^31).
  FP8RL_FAST_DIVMOD_FN uint32_t div(uint32_t n) const { return (mulhi(n, mul) + n) >> shift; }
  FP8RL_FAST_DIVMOD_FN void divmod(uint32_t n, uint32_t& q, uint32_t& r) const {
    q = div(n);
    r = n - q * divisor;
  }

 private:
  FP8RL_FAST_DIVMOD_FN static uint32_t mulhi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
    return __umulhi(a, b);
#else
    return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
  }
};

}  // namespace fp8rl::rollout

#undef FP8RL_FAST_DIVMOD_FN
