#include "trainer/loss_options.h"

#include "loss/aggregate.h"
#include "loss/kl.h"
#include "loss/rollout_correction.h"

namespace fp8rl::trainer {

loss::AdvantageOptions advantage_options(const recipe::AlgorithmConfig& a) {
  loss::AdvantageOptions o;
  o.estimator = loss::parse_adv_estimator(a.adv_estimator);
  o.norm_adv_by_batch = a.norm_adv_by_batch;
  return o;
}

loss::PolicyObjectiveOptions policy_objective_options(const recipe::AlgorithmConfig& a) {
  loss::PolicyObjectiveOptions o;
  o.policy.clip_ratio_low = a.clip_ratio_low;
  o.policy.clip_ratio_high = a.clip_ratio_high;
  o.policy.clip_ratio_c = a.clip_ratio_c;
  o.correction.level = loss::parse_tis_level(a.tis_level);
  o.correction.mode = loss::parse_tis_mode(a.tis_mode);
  o.correction.cap = a.tis_cap;
  o.correction.mask_lower = a.tis_mask_lower;
  o.loss_agg_mode = loss::parse_loss_agg_mode(a.loss_agg_mode);
  o.use_kl_loss = a.use_kl_loss;
  o.kl_loss_coef = a.kl_loss_coef;
  o.kl_loss_type = loss::parse_kl_type(a.kl_loss_type);
  o.entropy_coeff = a.entropy_coeff;
  return o;
}

}  // namespace fp8rl::trainer
