#include "loss/advantages.h"

#include "core/util/error.h"
#include "core/util/log.h"
#include "loss/dapo.h"

namespace fp8rl::loss {

AdvEstimator parse_adv_estimator(std::string_view name) {
  if (name == "grpo") return AdvEstimator::grpo;
  if (name == "dr_grpo") return AdvEstimator::dr_grpo;
  throw ConfigError(cat("algorithm.adv_estimator: unknown value '", name, "' (valid: grpo, dr_grpo)"));
}

const char* to_string(AdvEstimator estimator) {
  switch (estimator) {
    case AdvEstimator::grpo: return "grpo";
    case AdvEstimator::dr_grpo: return "dr_grpo";
  }
  return "?";
}

at::Tensor compute_advantages(const at::Tensor& rewards, const at::Tensor& group_ids,
                              const AdvantageOptions& options) {
  FP8RL_CHECK(rewards.dim() == 1 && group_ids.dim() == 1 && rewards.size(0) == group_ids.size(0),
              cat("rewards ", rewards.sizes(), " and group_ids ", group_ids.sizes(), " must both be [N]"));
  FP8RL_CHECK(group_ids.scalar_type() == at::kLong, cat("group_ids must be int64, got ", group_ids.scalar_type()));
  FP8RL_CHECK(options.eps > 0, cat("eps must be > 0, got ", options.eps));

  // Group statistics in double, whatever the reward dtype (float32/bf16 convert exactly): in
  // float32 the mean of seven 0.7f is off by an ulp, the std is ~1e-8 instead of 0, and
  // (r - mean) / (std + eps) came out as ~0.06 for a group with no signal at all.
  const auto out_dtype = at::promote_types(rewards.scalar_type(), at::kFloat);
  const at::Tensor r = rewards.detach().to(at::kDouble);
  const int64_t n = r.size(0);
  if (n == 0) return r.to(out_dtype);

  // inverse[i] = dense group index of sample i (0..G-1), whatever the ids look like.
  auto [unique_ids, inverse] = at::_unique(group_ids.to(r.device()), /*sorted=*/true, /*return_inverse=*/true);
  const int64_t num_groups = unique_ids.size(0);
  const at::Tensor zeros_g = at::zeros({num_groups}, r.options());
  const at::Tensor count = zeros_g.clone().index_add_(0, inverse, at::ones_like(r));  // [G]
  const at::Tensor mean = zeros_g.clone().index_add_(0, inverse, r) / count;          // [G]
  const at::Tensor centered = r - mean.index_select(0, inverse);                      // [N]
  // DAPO's filter rule, exact max > min (the rewards' dtype converts to double exactly, so the
  // comparison agrees in either).
  const at::Tensor has_signal = filter_groups_mask(rewards, group_ids).to(r.device());  // [N] bool

  at::Tensor adv;
  if (options.estimator == AdvEstimator::grpo) {
    const at::Tensor sq = zeros_g.clone().index_add_(0, inverse, centered * centered);  // [G]
    const at::Tensor std_g = (sq / (count - 1).clamp_min(1)).sqrt();                   // unbiased
    adv = centered / (std_g.index_select(0, inverse) + options.eps);
  } else {
    adv = centered;
  }
  // A group whose rewards are all equal (a singleton included) has no baseline-relative
  // signal: exactly 0, even in double where mean(r) may be an ulp away from r. The same test as
  // DAPO's filter, so a kept group is never all-zero.
  adv = at::where(has_signal, adv, at::zeros_like(adv));

  // Batch whitening over the samples with signal only: the zeros of all-equal groups train
  // nothing, and counting them would shrink the std, so the other advantages would grow with the
  // number of all-solved (or all-failed) prompts in the batch. They stay exactly 0.
  if (options.norm_adv_by_batch) {
    const at::Tensor live = adv.masked_select(has_signal);  // [S]
    if (live.size(0) > 1) {
      const at::Tensor whitened = (adv - live.mean()) / (live.std() /* unbiased */ + options.eps);
      adv = at::where(has_signal, whitened, adv);
    }
  }
  return adv.to(out_dtype);
}

}  // namespace fp8rl::loss
