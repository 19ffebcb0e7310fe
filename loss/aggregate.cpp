#include "loss/aggregate.h"

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::loss {

LossAggMode parse_loss_agg_mode(std::string_view name) {
  if (name == "token-mean") return LossAggMode::token_mean;
  if (name == "seq-mean-token-sum") return LossAggMode::seq_mean_token_sum;
  if (name == "seq-mean-token-mean") return LossAggMode::seq_mean_token_mean;
  if (name == "seq-mean-token-sum-norm") return LossAggMode::seq_mean_token_sum_norm;
  throw ConfigError(cat("algorithm.loss_agg_mode: unknown value '", name,
                        "' (valid: token-mean, seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm)"));
}

const char* to_string(LossAggMode mode) {
  switch (mode) {
    case LossAggMode::token_mean: return "token-mean";
    case LossAggMode::seq_mean_token_sum: return "seq-mean-token-sum";
    case LossAggMode::seq_mean_token_mean: return "seq-mean-token-mean";
    case LossAggMode::seq_mean_token_sum_norm: return "seq-mean-token-sum-norm";
  }
  return "?";
}

AggregationScale& AggregationScale::operator+=(const AggregationScale& other) {
  global_num_tokens += other.global_num_tokens;
  global_num_seqs += other.global_num_seqs;
  // max_response_length is a constant of the recipe, not a count: an unset (0) accumulator
  // takes the part's value; parts counted with different constants are a caller bug.
  if (max_response_length == 0) max_response_length = other.max_response_length;
  FP8RL_CHECK(other.max_response_length == 0 || other.max_response_length == max_response_length,
              cat("AggregationScale: adding parts with max_response_length ", max_response_length, " and ",
                  other.max_response_length));
  return *this;
}

AggregationScale count_scale(const at::Tensor& mask, int64_t max_response_length) {
  FP8RL_CHECK(mask.dim() == 2, cat("count_scale: mask must be [B, T], got ", mask.sizes()));
  const at::Tensor valid = mask.detach() != 0;
  const at::Tensor counts = at::stack({valid.sum(), valid.any(1).sum()}).to(at::kCPU, at::kDouble);
  AggregationScale s;
  s.global_num_tokens = counts[0].item<double>();
  s.global_num_seqs = counts[1].item<double>();
  s.max_response_length = static_cast<double>(max_response_length);
  return s;
}

at::Tensor aggregate_loss(const at::Tensor& per_token_loss, const at::Tensor& mask, LossAggMode mode,
                          const AggregationScale& scale) {
  FP8RL_CHECK(per_token_loss.dim() == 2 && mask.sizes() == per_token_loss.sizes(),
              cat("aggregate_loss: per_token_loss ", per_token_loss.sizes(), " and mask ", mask.sizes(),
                  " must both be [B, T]"));
  const at::Tensor m = mask.detach().to(per_token_loss.scalar_type());
  // where() rather than "* m" so a non-finite loss on a padding position cannot leak in.
  const at::Tensor masked = at::where(m != 0, per_token_loss * m, at::zeros_like(per_token_loss));  // [B, T]
  auto need = [&](double v, const char* what) {
    FP8RL_CHECK(v > 0, cat(to_string(mode), " needs ", what, " > 0, got ", v));
  };
  switch (mode) {
    case LossAggMode::token_mean:
      need(scale.global_num_tokens, "global_num_tokens");
      return masked.sum() / scale.global_num_tokens;
    case LossAggMode::seq_mean_token_sum:
      need(scale.global_num_seqs, "global_num_seqs");
      return masked.sum() / scale.global_num_seqs;
    case LossAggMode::seq_mean_token_mean: {
      need(scale.global_num_seqs, "global_num_seqs");
      // Empty sequences have a zero sum and count 1: they add nothing (and are not in num_seqs).
      const at::Tensor seq_mean = masked.sum(1) / m.sum(1).clamp_min(1);  // [B]
      return seq_mean.sum() / scale.global_num_seqs;
    }
    case LossAggMode::seq_mean_token_sum_norm:
      // verl: sum / constant, no division by the number of sequences (see aggregate.h). The
      // divisor is a constant, so each part's share is simply its own sum / Lmax.
      need(scale.max_response_length, "max_response_length");
      return masked.sum() / scale.max_response_length;
  }
  FP8RL_CHECK(false, "aggregate_loss: unhandled LossAggMode");
  return {};
}

}  // namespace fp8rl::loss
