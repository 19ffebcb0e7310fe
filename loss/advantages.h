// Outcome advantages for group-based policy gradients (GRPO, Dr.GRPO).
//
// A "group" is the n samples of one prompt. Every sample gets one scalar advantage, broadcast
// over its response tokens by the policy loss.
#pragma once

#include <ATen/ATen.h>

#include <string_view>

namespace fp8rl::loss {

enum class AdvEstimator {
  grpo,     // (r - mean_g) / (std_g + eps)
  dr_grpo,  // r - mean_g (Dr.GRPO: no std division, it biases towards easy/hard prompts)
};

// "grpo" | "dr_grpo" (algorithm.adv_estimator); ConfigError listing the valid values otherwise.
// For the trainer, once, when it reads the recipe: the functions here take the enum.
AdvEstimator parse_adv_estimator(std::string_view name);
const char* to_string(AdvEstimator estimator);

struct AdvantageOptions {
  AdvEstimator estimator = AdvEstimator::grpo;  // algorithm.adv_estimator
  bool norm_adv_by_batch = false;  // algorithm.norm_adv_by_batch: then whiten over the batch (below)
  double eps = 1e-6;               // keeps the division finite when a group's std is tiny (verl's value)
};

// Per-sample advantages.
//   rewards   [N] float   scalar reward of each sample
//   group_ids [N] int64   prompt index of each sample; arbitrary ids, groups of any size, any order
// Returns [N] in promote(rewards dtype, float32) on rewards' device; the statistics are computed
// in float64 whatever the rewards' dtype (float32/bf16 convert to double exactly).
//
// std_g is the UNBIASED sample std (divide by n_g - 1), as verl's torch.std. A group whose
// rewards are all equal (max == min, exact comparison, the rule of dapo.h's filter_groups_mask)
// gets advantage exactly 0. Deliberate differences from verl: verl computes in the rewards'
// dtype, where a float32 group of seven 0.7 gets a mean an ulp off and a std of ~1e-8, so
// (r - mean) / (std + eps) is ~0.06 instead of 0 — a signal from rounding alone; and verl gives
// a one-sample group mean 0, std 1, i.e. the raw reward, while with no baseline we give it 0.
// With norm_adv_by_batch the group advantages are then whitened over the samples that have a
// signal: (a - mean(a)) / (std(a) + eps), mean and unbiased std over those samples, in float64;
// the zeros of all-equal groups are left out of both and stay 0 (else the std, and so every other
// advantage's scale, would depend on how many prompts were all solved or all failed).
at::Tensor compute_advantages(const at::Tensor& rewards, const at::Tensor& group_ids,
                              const AdvantageOptions& options);

}  // namespace fp8rl::loss
