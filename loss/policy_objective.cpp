#include "loss/policy_objective.h"

#include "core/util/error.h"
#include "core/util/log.h"
#include "loss/kl.h"

namespace fp8rl::loss {

PolicyObjective policy_objective(const PolicyObjectiveInputs& in, const PolicyObjectiveOptions& options,
                                 const AggregationScale& scale) {
  const LossAggMode agg = options.loss_agg_mode;
  const KlType kl_type = options.kl_loss_type;
  FP8RL_CHECK(in.logp.defined() && in.old_logp.defined() && in.advantages.defined() && in.response_mask.defined(),
              "policy_objective: logp, old_logp, advantages and response_mask are required");
  FP8RL_CHECK(!options.use_kl_loss || in.ref_logp.defined(), "policy_objective: use_kl_loss needs ref_logp");
  FP8RL_CHECK(options.entropy_coeff == 0 || in.entropy.defined(), "policy_objective: entropy_coeff != 0 needs entropy");

  PolicyObjective out;
  // The rollout correction first: in mask mode it drops tokens, and the clip metrics below are
  // then taken over the tokens that train (as verl folds its rejection mask into response_mask).
  at::Tensor mask = in.response_mask.detach().to(in.logp.scalar_type());  // [B, T]
  at::Tensor weight;                                                      // [B, T] or undefined
  if (in.rollout_logp.defined()) {
    RolloutCorrection rc = rollout_correction(in.old_logp, in.rollout_logp, in.response_mask, options.correction);
    weight = rc.weight;
    mask = rc.mask.to(in.logp.scalar_type());
    const MismatchMetrics& m = rc.metrics;
    out.metrics["mismatch/kl_k1"] = m.kl_k1;
    out.metrics["mismatch/kl_k3"] = m.kl_k3;
    out.metrics["mismatch/abs_diff_max"] = m.abs_diff_max;
    out.metrics["mismatch/abs_diff_mean"] = m.abs_diff_mean;
    out.metrics["mismatch/is_weight_mean"] = m.is_weight_mean;
    out.metrics["mismatch/is_weight_min"] = m.is_weight_min;
    out.metrics["mismatch/is_weight_max"] = m.is_weight_max;
    out.metrics["mismatch/frac_corrected"] = m.frac_corrected;
    out.metrics["mismatch/ess"] = m.ess;
  }
  PolicyLoss pg = ppo_clip_loss(in.logp, in.old_logp, in.advantages, mask, options.policy);
  at::Tensor pg_loss = pg.per_token_loss;  // [B, T]
  if (weight.defined()) pg_loss = pg_loss * weight.to(pg_loss.scalar_type());  // detached: a constant factor

  // Each term is aggregated on its own (the aggregation is linear, so this equals aggregating
  // the per-token sum) to report its value.
  const at::Tensor pg_term = aggregate_loss(pg_loss, mask, agg, scale);
  at::Tensor loss = pg_term;
  at::Tensor kl_term = at::zeros({}, loss.options());
  if (options.use_kl_loss) {
    kl_term = aggregate_loss(kl_penalty(in.logp, in.ref_logp, kl_type), mask, agg, scale);
    loss = loss + options.kl_loss_coef * kl_term;
  }
  at::Tensor ent_term = at::zeros({}, loss.options());
  if (in.entropy.defined()) {
    ent_term = aggregate_loss(in.entropy.to(loss.scalar_type()), mask, agg, scale);
    if (options.entropy_coeff != 0) loss = loss - options.entropy_coeff * ent_term;
  }
  const at::Tensor stats = at::stack({pg_term.detach(), kl_term.detach(), ent_term.detach()}).to(at::kCPU, at::kDouble);
  out.metrics["pg_loss"] = stats[0].item<double>();
  out.metrics["kl_loss"] = stats[1].item<double>();
  out.metrics["entropy"] = stats[2].item<double>();
  // pg_clipfrac_low = lower PPO clip; verl's pg_clipfrac_lower is our pg_clipfrac_dual.
  out.metrics["pg_clipfrac_low"] = pg.metrics.clipfrac_low;
  out.metrics["pg_clipfrac_high"] = pg.metrics.clipfrac_high;
  out.metrics["pg_clipfrac_dual"] = pg.metrics.clipfrac_dual;
  out.metrics["ppo_kl"] = pg.metrics.approx_kl;
  out.loss = loss;
  out.mask = mask;
  return out;
}

}  // namespace fp8rl::loss
