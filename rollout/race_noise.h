// The sampler's random numbers: one uniform draw per (row seed, vocabulary entry), a pure
// function of the two (a counter-based hash, no generator state). The CPU reference
// (rollout/sampler.cpp) and the CUDA kernel (rollout/cuda/sampler.cu) compute the same bits, so a
// sample's tokens depend on (seed, sample, position) and the logits only: not on the batch, the
// device's generator, or which kernel ran. Plain header: no CUDA include, usable by nvcc and g++.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FP8RL_HOST_DEVICE __host__ __device__
#else
#define FP8RL_HOST_DEVICE
#endif

namespace fp8rl::rollout {

// splitmix64's finaliser: a bijection of 64-bit words with full avalanche.
FP8RL_HOST_DEVICE inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// U in (0, 1) from a hash's top 23 bits, centred in their interval: (k + 1/2) / 2^23 for
// k < 2^23, every value exact in float, so U lies in [2^-24, 1 - 2^-24] and -log(-log(U)) in
// [-2.82, 16.64]. (Top 24 bits, as before, made (2^24 - 1/2) round to 2^24 in float: U = 1 for one
// hash in 2^24, noise +inf, and that token won the race whatever its logit: about one draw in
// 110 at a 152K vocabulary was uniform over the vocabulary.)
FP8RL_HOST_DEVICE inline float uniform_from_hash(uint64_t h) {
  return (static_cast<float>(h >> 41) + 0.5f) * (1.0f / 8388608.0f);
}

// The race's uniform for vocabulary entry `v` of a row seeded `row_seed`.
FP8RL_HOST_DEVICE inline float race_uniform(uint64_t row_seed, uint64_t v) {
  return uniform_from_hash(mix64(row_seed ^ mix64(v)));
}

}  // namespace fp8rl::rollout
