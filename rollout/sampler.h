// The engine's sampler: next tokens from the last-position logits of a decode (or prefill) step,
// with the log-prob the trainer will recompute.
//
// Log-prob: for every sampled token, log softmax(logits / temperature)[token] over the FULL
// vocabulary, in fp32 -- not the top-k/top-p truncated distribution. That is the quantity the
// trainer's chunked log-prob computes (loss/logprobs.h), so the importance ratio
// exp(old_logp - rollout_logp) compares like with like. Greedy rows (temperature 0) report it
// under softmax(logits), i.e. temperature 1.
//
// Determinism: each row's random draw is a pure function of (seed, sample index, position) and
// the row's logits: the race's noise for vocabulary entry v is race_uniform(row_seed, v), a
// counter-based hash (rollout/race_noise.h), with no generator state. So a sample's tokens do
// not depend on which other sequences share its batch, on the batch order, on preemption and
// recompute, or on the device: CPU and CUDA draw the same noise (their float rounding of the
// logits and logs may still differ in the last bit, which flips a draw only on a near-tie).
//
// Sampling: truncate (top-k, then top-p over what is left), then the exponential race
// (argmax of logprob - log E, E = -log U ~ Exp(1), i.e. the Gumbel-max trick), which draws exactly
// from the truncated, renormalised distribution without building it.
//
// On CUDA, rows without truncation (RL rollouts sample the full distribution) run one fused
// kernel for the whole batch: one pass per row gives the log-sum-exp and the race
// (rollout/cuda/sampler.cu). Rows with top-k / top-p, and the CPU, take sample_reference: ATen's
// log_softmax, a sort for top-p, the same noise. A batch mixing both kinds is split by row, so a
// row takes its kind's path whatever its neighbours ask for.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

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

// The same draws without the fused kernel (any device): the CPU path, the top-k / top-p path on
// CUDA, and the kernel's reference in tests.
SampleResult sample_reference(const at::Tensor& logits, std::span<const SamplingParams> params,
                              std::span<const SampleKey> keys);

// Why these settings cannot be sampled with (negative or NaN temperature, top_p outside (0, 1]),
// or nullopt. sample() throws it as a ConfigError; the engine fails such a request alone first.
std::optional<std::string> sampling_params_error(const SamplingParams& p);

// The seed of a row's noise: a 64-bit mix of (seed, sample, position) (splitmix64 steps).
uint64_t row_seed(uint64_t seed, const SampleKey& key);

}  // namespace fp8rl::rollout
