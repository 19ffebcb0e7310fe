// The engine's sampler: next tokens from the last-position logits of a decode (or prefill) step,
// with the log-prob the trainer will recompute.
//
// Log-prob: for every sampled token, log softmax(logits / temperature)[token] over the FULL
// vocabulary, in fp32 -- not the top-k/top-p truncated distribution. That is the quantity the
// trainer's chunked log-prob computes (loss/logprobs.h), so the importance ratio
// exp(old_logp - rollout_logp) compares like with like. Greedy rows (temperature 0) report it
// under softmax(logits), i.e. temperature 1.
//
// Determinism: each row's random draw is a pure function of (seed, sample index, position):
// its own generator is seeded with a hash of the three, so a sample's tokens do not depend on
// which other sequences share its batch, on the batch order, or on preemption and recompute.
// Guaranteed on one device type with the same logits; CPU and CUDA generators differ.
//
// Sampling: truncate (top-k, then top-p over what is left), then the exponential race
// (argmax of logprob - log E, E ~ Exp(1), i.e. the Gumbel-max trick), which draws exactly from the
// truncated, renormalised distribution without building it. Correctness first: one generator
// call per row and a full sort for top-p; the speed issue replaces both with a fused kernel.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <span>

namespace fp8rl::rollout {

struct SamplingParams {
  double temperature = 1.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // keep the k most likely tokens; <= 0 = off
  double top_p = 1.0;        // keep the smallest set of most likely tokens with mass >= top_p; 1 = off
  uint64_t seed = 0;         // the request's seed
};

// Which random stream a row draws from.
struct SampleKey {
  uint64_t sample = 0;   // the sample's index within its request (the n of GRPO)
  int64_t position = 0;  // the position of the token being sampled
};

struct SampleResult {
  at::Tensor tokens;    // [S] int64 on the logits' device
  at::Tensor logprobs;  // [S] float32: log softmax(logits / temperature)[token], full vocabulary
};

// logits [S, V] (any float dtype, CPU or CUDA), one SamplingParams and one SampleKey per row.
// Throws ConfigError for invalid params (negative temperature, top_p outside (0, 1]).
SampleResult sample(const at::Tensor& logits, std::span<const SamplingParams> params, std::span<const SampleKey> keys);

// The seed of a row's generator: a 64-bit mix of (seed, sample, position) (splitmix64 steps).
uint64_t row_seed(uint64_t seed, const SampleKey& key);

}  // namespace fp8rl::rollout
