// Rollout correction: importance sampling between the rollout engine's sampling distribution
// (FP8 weights, its own kernels) and the trainer's old policy (the same weights, recomputed).
//
// The samples come from pi_rollout but the PPO objective assumes they came from pi_old. The
// correction weight is w = pi_old / pi_rollout = exp(old_logp - rollout_logp), either per token
// or per sequence (product over its tokens), then either truncated at the cap C (TIS) or used
// to drop tokens/sequences whose ratio falls outside [lower, C] (masked IS). The weight is a
// constant (detached) multiplier: gradients flow only through the policy loss it scales.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string_view>

namespace fp8rl::loss {

// token: one weight per token. sequence: the product of a sequence's token ratios. geometric:
// their geometric mean exp(mean log-ratio), one per sequence -- length-independent, which is
// what NeMo-RL's seq-mask-tis masks on (tis_mode: mask) and what stays usable for long
// responses where the product collapses to 0 or overflows the cap.
enum class TisLevel { token, sequence, geometric, none };
enum class TisMode { truncate, mask };

// "token" | "sequence" | "geometric" | "none" (algorithm.tis_level); ConfigError listing valid values otherwise.
// For the trainer, once, when it reads the recipe: rollout_correction() takes the enums.
TisLevel parse_tis_level(std::string_view name);
// "truncate" | "mask" (algorithm.tis_mode); ConfigError listing valid values otherwise.
TisMode parse_tis_mode(std::string_view name);
const char* to_string(TisLevel level);
const char* to_string(TisMode mode);

struct RolloutCorrectionOptions {
  TisLevel level = TisLevel::token;  // algorithm.tis_level
  TisMode mode = TisMode::truncate;  // algorithm.tis_mode
  double cap = 2.0;                  // algorithm.tis_cap: C (truncate: min(w, C); mask: drop w > C)
  double mask_lower = 0.5;           // algorithm.tis_mask_lower, in (0, 1): mask mode drops w < lower
  // Bound on the log of a weight before exp() (verl's SAFETY_BOUND): token level clamps each
  // token's log-ratio; sequence level clamps only the SUM of the unclamped token log-ratios
  // (the product of the true ratios), as verl does. A sequence holding both a +inf and a -inf
  // log-ratio has no defined product: it gets log-weight -clamp (no weight / dropped).
  double log_ratio_clamp = 20.0;
};

// How far the rollout engine's log-probs are from the trainer's, over the response tokens.
struct MismatchMetrics {
  double kl_k1 = 0;           // mean(rollout_logp - old_logp): KL(rollout || old), samples from rollout
  double kl_k3 = 0;           // mean(w - 1 - log w), w = old/rollout per token: same KL, low variance, >= 0
  double abs_diff_max = 0;    // max |old_logp - rollout_logp|
  double abs_diff_mean = 0;   // mean |old_logp - rollout_logp|
  double is_weight_mean = 1;  // raw (untruncated) ratio at the chosen level (token: per token,
  double is_weight_min = 1;   //   sequence: per sequence; level none reports the token ratios)
  double is_weight_max = 1;
  double frac_corrected = 0;  // fraction of units truncated (truncate) or dropped (mask); 0 for none
  double ess = 1;             // (sum w)^2 / (n sum w^2) of the raw ratios, in (0, 1]; 1 = no mismatch
  int64_t num_units = 0;      // tokens (token/none) or non-empty sequences (sequence) measured
};

struct RolloutCorrection {
  at::Tensor weight;  // [B, T] detached multiplier for the per-token policy loss (1 in mask mode and none)
  at::Tensor mask;    // [B, T] float, response_mask with dropped tokens/sequences zeroed (mask mode)
  MismatchMetrics metrics;
};

// old_logp      [B, T] float  trainer's log-probs of the sampled tokens under the old policy
// rollout_logp  [B, T] float  the rollout engine's sampling log-probs of the same tokens
// response_mask [B, T] bool/float  1 = response token
// Nothing here is differentiable; inputs are detached. Bad knobs -> ConfigError.
RolloutCorrection rollout_correction(const at::Tensor& old_logp, const at::Tensor& rollout_logp,
                                     const at::Tensor& response_mask, const RolloutCorrectionOptions& options);

}  // namespace fp8rl::loss
