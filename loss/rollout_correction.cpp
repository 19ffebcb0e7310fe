#include "loss/rollout_correction.h"

#include <limits>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::loss {

TisLevel parse_tis_level(std::string_view name) {
  if (name == "token") return TisLevel::token;
  if (name == "sequence") return TisLevel::sequence;
  if (name == "geometric") return TisLevel::geometric;
  if (name == "none") return TisLevel::none;
  throw ConfigError(cat("algorithm.tis_level: unknown value '", name, "' (valid: token, sequence, geometric, none)"));
}

TisMode parse_tis_mode(std::string_view name) {
  if (name == "truncate") return TisMode::truncate;
  if (name == "mask") return TisMode::mask;
  throw ConfigError(cat("algorithm.tis_mode: unknown value '", name, "' (valid: truncate, mask)"));
}

const char* to_string(TisLevel level) {
  switch (level) {
    case TisLevel::token: return "token";
    case TisLevel::sequence: return "sequence";
    case TisLevel::geometric: return "geometric";
    case TisLevel::none: return "none";
  }
  return "?";
}

const char* to_string(TisMode mode) {
  switch (mode) {
    case TisMode::truncate: return "truncate";
    case TisMode::mask: return "mask";
  }
  return "?";
}

RolloutCorrection rollout_correction(const at::Tensor& old_logp, const at::Tensor& rollout_logp,
                                     const at::Tensor& response_mask, const RolloutCorrectionOptions& options) {
  const TisLevel level = options.level;
  const TisMode mode = options.mode;
  if (level != TisLevel::none) {
    if (!(options.cap > 1)) throw ConfigError(cat("algorithm.tis_cap must be > 1, got ", options.cap));
    // Below 1, as the recipe requires: a lower bound >= 1 would drop every token the trainer finds
    // less likely than the rollout did, a one-sided and biased filter.
    if (mode == TisMode::mask && !(options.mask_lower > 0 && options.mask_lower < 1)) {
      throw ConfigError(cat("algorithm.tis_mask_lower must be in (0, 1), got ", options.mask_lower));
    }
  }
  FP8RL_CHECK(old_logp.dim() == 2 && rollout_logp.sizes() == old_logp.sizes() &&
                  response_mask.sizes() == old_logp.sizes(),
              cat("rollout_correction: old_logp ", old_logp.sizes(), ", rollout_logp ", rollout_logp.sizes(),
                  ", response_mask ", response_mask.sizes(), " must all be [B, T]"));
  FP8RL_CHECK(options.log_ratio_clamp > 0, cat("log_ratio_clamp must be > 0, got ", options.log_ratio_clamp));

  const auto dtype = at::promote_types(old_logp.scalar_type(), at::kFloat);
  const at::Tensor m = response_mask.detach().to(dtype);  // [B, T]
  if (m.numel() == 0) return {at::ones_like(m), m.clone(), MismatchMetrics{}};
  const at::Tensor valid_tok = m > 0;                     // [B, T]
  const at::Tensor zero = at::zeros({}, m.options());
  // where() rather than "* m": padding may hold anything (even NaN) and must not leak in.
  const at::Tensor diff = at::where(valid_tok, old_logp.detach().to(dtype) - rollout_logp.detach().to(dtype), zero);
  const double c = options.log_ratio_clamp;
  // [B, T], 0 on padding; token-level ratios and metrics. A NaN log-ratio (a NaN log-prob on
  // either side) becomes -clamp, as a sequence's NaN sum does below: no weight in truncate mode,
  // dropped in mask mode. Left NaN, one token would make the loss, the gradient norm and so the
  // whole mini-batch's update non-finite (the step then skips it).
  const at::Tensor log_ratio = at::where(at::isnan(diff), at::full({}, -c, diff.options()), diff).clamp(-c, c);

  // A "unit" is what one weight belongs to: a token, or a whole sequence.
  at::Tensor unit_log_ratio, unit_valid;  // [B, T] or [B]
  const bool per_sequence = level == TisLevel::sequence || level == TisLevel::geometric;
  if (per_sequence) {
    // The sequence weight is the product of the TRUE token ratios, exp(sum of log-ratios), so
    // the token log-ratios are summed unclamped and only the sum is clamped (verl's
    // SAFETY_BOUND): clamping each token first would turn [+25, -24] (product e^1) into
    // e^(20 - 20) = 1. The sum runs in double: finite float32 log-ratios cannot overflow it.
    at::Tensor seq_sum = diff.to(at::kDouble).sum(1);  // [B]
    // Geometric: the mean log-ratio over the sequence's tokens (empty sequences: 0 / 1).
    if (level == TisLevel::geometric) seq_sum = seq_sum / valid_tok.sum(1).clamp_min(1).to(at::kDouble);
    // A sequence holding both a +inf and a -inf log-ratio (each side found impossible a token
    // the other sampled) has no defined product: the NaN becomes -clamp, i.e. no weight in
    // truncate mode and dropped in mask mode, rather than poisoning the loss.
    unit_log_ratio = at::where(at::isnan(seq_sum), at::full({}, -c, seq_sum.options()), seq_sum)
                         .clamp(-c, c)
                         .to(dtype);  // [B]
    unit_valid = valid_tok.any(1);    // [B]; empty sequences carry no weight
  } else {
    unit_log_ratio = log_ratio;
    unit_valid = valid_tok;
  }
  const at::Tensor unit_ratio = unit_log_ratio.exp();
  auto to_tokens = [&](const at::Tensor& u) {  // [B] or [B, T] -> [B, T]
    return per_sequence ? u.unsqueeze(1).expand_as(m) : u;
  };

  RolloutCorrection out;
  at::Tensor corrected = at::zeros_like(unit_valid);  // bool, units truncated or dropped
  if (level == TisLevel::none) {
    out.weight = at::ones_like(m);
    out.mask = m.clone();
  } else if (mode == TisMode::truncate) {
    corrected = unit_ratio > options.cap;
    out.weight = to_tokens(unit_ratio.clamp_max(options.cap)).contiguous();
    out.mask = m.clone();
  } else {
    const at::Tensor keep = (unit_ratio >= options.mask_lower) & (unit_ratio <= options.cap);
    corrected = ~keep;
    out.weight = at::ones_like(m);
    out.mask = m * to_tokens(keep).to(dtype);
  }

  // Metrics: gather every number into one tensor so there is one device->host copy.
  const at::Tensor n_tok = m.sum();
  const at::Tensor n_tok1 = n_tok.clamp_min(1);
  const at::Tensor uv = unit_valid.to(dtype);
  const at::Tensor n_unit = uv.sum();
  const at::Tensor n_unit1 = n_unit.clamp_min(1);
  const at::Tensor w = at::where(unit_valid, unit_ratio, zero);
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor w_sum = w.sum();
  const at::Tensor stats = at::stack({
      n_unit,
      (-diff).sum() / n_tok1,                                          // kl_k1
      at::where(valid_tok, log_ratio.exp() - 1 - log_ratio, zero).sum() / n_tok1,  // kl_k3
      diff.abs().max(),
      diff.abs().sum() / n_tok1,
      w_sum / n_unit1,
      at::where(unit_valid, unit_ratio, at::full({}, inf, m.options())).min(),
      at::where(unit_valid, unit_ratio, at::full({}, -inf, m.options())).max(),
      (corrected & unit_valid).to(dtype).sum() / n_unit1,
      w_sum * w_sum / (n_unit1 * (w * w).sum()).clamp_min(std::numeric_limits<float>::min()),
  }).to(at::kCPU, at::kDouble);
  const double* s = stats.data_ptr<double>();
  MismatchMetrics& mm = out.metrics;
  mm.num_units = static_cast<int64_t>(s[0]);
  if (mm.num_units > 0) {
    mm.kl_k1 = s[1];
    mm.kl_k3 = s[2];
    mm.abs_diff_max = s[3];
    mm.abs_diff_mean = s[4];
    mm.is_weight_mean = s[5];
    mm.is_weight_min = s[6];
    mm.is_weight_max = s[7];
    mm.frac_corrected = level == TisLevel::none ? 0.0 : s[8];
    mm.ess = s[9];
  }
  return out;
}

}  // namespace fp8rl::loss
