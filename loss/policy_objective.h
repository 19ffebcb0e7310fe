// The actor's objective for one micro-batch, composed from the pieces in this folder:
//   ratio/clip (policy_loss) -> x rollout-correction weight (detached; mask mode edits the mask)
//   -> + kl_loss_coef * KL(current || ref) -> - entropy_coeff * entropy -> aggregate (global scale)
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>

#include "loss/aggregate.h"
#include "loss/kl.h"
#include "loss/policy_loss.h"
#include "loss/rollout_correction.h"

namespace fp8rl::loss {

struct PolicyObjectiveOptions {
  PolicyLossOptions policy;
  RolloutCorrectionOptions correction;
  LossAggMode loss_agg_mode = LossAggMode::token_mean;
  bool use_kl_loss = false;
  double kl_loss_coef = 0.001;
  KlType kl_loss_type = KlType::k3;
  double entropy_coeff = 0.0;
};

struct PolicyObjectiveInputs {
  at::Tensor logp;           // [B, T] float, current policy (requires grad)
  at::Tensor old_logp;       // [B, T] float, trainer's recompute of the behaviour policy
  at::Tensor rollout_logp;   // [B, T] float, rollout engine's sampling log-probs; undefined = no correction
  at::Tensor advantages;     // [B] or [B, T] float
  at::Tensor response_mask;  // [B, T] bool/float, 1 = response token
  at::Tensor ref_logp;       // [B, T] float, reference policy; required when use_kl_loss
  at::Tensor entropy;        // [B, T] float (differentiable); required when entropy_coeff != 0, else metric only
};

struct PolicyObjective {
  at::Tensor loss;  // 0-dim, this micro-batch's share of the mini-batch loss (sum over micro-batches)
  at::Tensor mask;  // [B, T] float, the effective loss mask (after rollout-correction masking)
  // pg_loss, kl_loss, entropy (each aggregated like the loss, i.e. this micro-batch's share),
  // pg_clipfrac_low/high/dual, ppo_kl (means over `mask`: in TIS mask mode, the kept tokens),
  // and mismatch/* (see MismatchMetrics) when corrected.
  // pg_clipfrac_low is the LOWER PPO CLIP (A < 0, ratio < 1 - clip_ratio_low); verl's
  // similarly named pg_clipfrac_lower is the DUAL clip, i.e. our pg_clipfrac_dual, and verl's
  // pg_clipfrac is our pg_clipfrac_low + pg_clipfrac_high (see PolicyLossMetrics).
  std::map<std::string, double> metrics;
};

// `scale` must be counted on the EFFECTIVE mask of the whole mini-batch: with tis_mode mask,
// run rollout_correction() over the mini-batch first and count_scale() its .mask (it depends
// only on old/rollout log-probs, which are known before the update). Numeric knobs (clip
// ratios, tis_cap, tis_mask_lower) are validated by the functions it calls (ConfigError).
PolicyObjective policy_objective(const PolicyObjectiveInputs& inputs, const PolicyObjectiveOptions& options,
                                 const AggregationScale& scale);

}  // namespace fp8rl::loss
