// PPO clipped surrogate with asymmetric clipping (DAPO clip-higher) and optional dual clip.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fp8rl::loss {

struct PolicyLossOptions {
  double clip_ratio_low = 0.2;         // algorithm.clip_ratio_low: ratio >= 1 - low
  double clip_ratio_high = 0.2;        // algorithm.clip_ratio_high: ratio <= 1 + high (DAPO: 0.28)
  std::optional<double> clip_ratio_c = 3.0;  // algorithm.clip_ratio_c: dual clip (> 1) for A < 0 (verl's 3); nullopt = off
  double log_ratio_clamp = 20.0;       // |logp - old_logp| is clamped here so exp() cannot overflow
};

// Masked means over the response tokens of the tensors passed in (a micro-batch's own tokens).
//
// NOT verl's names: verl's pg_clipfrac_lower is the DUAL-clip fraction (our clipfrac_dual),
// not the lower PPO clip, and verl's pg_clipfrac counts both PPO clips together (our
// clipfrac_low + clipfrac_high). Our clipfrac_low is the lower PPO clip (1 - clip_ratio_low),
// which verl does not report on its own. Compare dashboards accordingly.
struct PolicyLossMetrics {
  double clipfrac_low = 0;   // A < 0 and ratio < 1 - low: the lower PPO clip is active (no gradient); NOT verl's
                             //   pg_clipfrac_lower, which is clipfrac_dual
  double clipfrac_high = 0;  // A > 0 and ratio > 1 + high: the upper clip is active (no gradient)
  double clipfrac_dual = 0;  // A < 0 and max(L1, L2) > -A*c: the dual clip caps the loss (= verl's pg_clipfrac_lower)
  double approx_kl = 0;      // mean(old_logp - logp): KL(old || current) estimate (verl's ppo_kl)
};

struct PolicyLoss {
  at::Tensor per_token_loss;  // [B, T] differentiable w.r.t. logp; not masked (aggregate() masks)
  at::Tensor ratio;           // [B, T] exp(clamped logp - old_logp), detached, for diagnostics
  PolicyLossMetrics metrics;
};

// Per-token PPO loss, verl's compute_policy_loss ("vanilla"):
//   L1 = -A * ratio,  L2 = -A * clip(ratio, 1 - low, 1 + high),  L = max(L1, L2)
//   dual clip (A < 0 only):  L = min(L, -A * c)
//   logp          [B, T] float  current policy log-probs of the response tokens (requires grad)
//   old_logp      [B, T] float  log-probs of the policy that collected the batch (no grad)
//   advantages    [B] or [B, T] float  per-sample or per-token advantages (no grad)
//   response_mask [B, T] bool/float  1 = response token; only used for the metrics here
// Bad clip values -> ConfigError (they come from the recipe).
PolicyLoss ppo_clip_loss(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                         const at::Tensor& response_mask, const PolicyLossOptions& options);

// Masked mean of x over mask, as a 0-dim tensor; 0 when the mask is empty.
//   x [B, T], mask [B, T] (any dtype; nonzero = included)
at::Tensor masked_mean(const at::Tensor& x, const at::Tensor& mask);

}  // namespace fp8rl::loss
