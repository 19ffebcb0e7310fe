// Test helper: a sampling seed whose race noise is at its extreme for one vocabulary entry. The
// noise's hashes (rollout/race_noise.h) are bijections, so they can be run backwards: from the
// hash an entry should get to the row seed that gives it, and on to the user seed.
#pragma once

#include <cstdint>

#include "rollout/race_noise.h"
#include "rollout/sampler.h"

namespace fp8rl::rollout::testing {

// The inverse of an odd number modulo 2^64 (Newton's iteration doubles the correct bits).
inline uint64_t odd_inverse(uint64_t c) {
  uint64_t x = c;  // correct to 3 bits for odd c
  for (int i = 0; i < 5; ++i) x *= 2 - c * x;
  return x;
}

// x ^ (x >> s) undone (for s >= 1: apply the shift until it runs off the word).
inline uint64_t unxorshift(uint64_t y, int s) {
  uint64_t x = y;
  for (int k = s; k < 64; k += s) x = y ^ (x >> s);
  return x;
}

// mix64's inverse: mix64_inverse(mix64(x)) == x.
inline uint64_t mix64_inverse(uint64_t y) {
  uint64_t x = unxorshift(y, 31);
  x = unxorshift(x * odd_inverse(0x94D049BB133111EBull), 27);
  x = unxorshift(x * odd_inverse(0xBF58476D1CE4E5B9ull), 30);
  return x - 0x9E3779B97F4A7C15ull;
}

// The user seed that, for `key`, gives vocabulary entry `v` the hash `h` (race_uniform's input).
inline uint64_t seed_for_hash(uint64_t h, uint64_t v, const SampleKey& key) {
  const uint64_t row = mix64_inverse(h) ^ mix64(v);  // row_seed(seed, key)
  // row_seed = mix64(mix64(mix64(seed) ^ sample) ^ position)
  return mix64_inverse(mix64_inverse(mix64_inverse(row) ^ static_cast<uint64_t>(key.position)) ^ key.sample);
}

}  // namespace fp8rl::rollout::testing
