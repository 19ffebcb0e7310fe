// DAPO's data-side pieces: dynamic-sampling group filter and overlong reward shaping.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fp8rl::loss {

// Dynamic sampling (algorithm.filter_groups): a group whose rewards are all equal has zero
// advantage for every sample, so it only dilutes the batch; keep the others. (The trainer applies
// this rule to the scores before overlong shaping, as DAPO filters on accuracy: group_has_signal
// in trainer/rl_step.h.)
//   rewards   [N] float  scalar reward per sample
//   group_ids [N] int64  prompt index per sample (arbitrary ids, any group sizes)
// Returns [N] bool, true = keep. A singleton group is "all equal" and is dropped. Equality is
// exact (max == min): rewards of verifiers are discrete; shaped rewards differ anyway.
at::Tensor filter_groups_mask(const at::Tensor& rewards, const at::Tensor& group_ids);

// Indices [K] int64 of the kept samples, ascending (filter_groups_mask(...).nonzero()).
at::Tensor filter_groups_indices(const at::Tensor& rewards, const at::Tensor& group_ids);

// DAPO overlong shaping, added to the reward (reward.overlong_buffer_len / overlong_penalty_factor):
//   L <= Lmax - Lb              -> 0
//   Lmax - Lb < L <= Lmax       -> ((Lmax - Lb) - L) / Lb * factor   (linear, -factor at L = Lmax)
//   L > Lmax                    -> -factor
// buffer_len = 0 turns it off (always 0). ConfigError if buffer_len < 0, buffer_len > max_len,
// or factor < 0.
double overlong_penalty(int64_t response_length, int64_t max_response_length, int64_t buffer_len, double factor);

// The same per sample: response_lengths [N] int64 -> [N] float32 on the same device.
at::Tensor overlong_penalty(const at::Tensor& response_lengths, int64_t max_response_length, int64_t buffer_len,
                            double factor);

}  // namespace fp8rl::loss
