// Reducing a per-token loss matrix to the scalar that is differentiated (loss_agg_mode).
//
// The normalisers are GLOBAL: counts over the whole mini-batch (all micro-batches, all ranks),
// passed in by the caller. Each micro-batch's aggregate is then its share of the whole-batch
// loss, so summing micro-batch losses (gradient accumulation, and the all-reduce sum over
// ranks) gives exactly the whole-batch loss and gradient, whatever the micro-batch split.
#pragma once

#include <ATen/ATen.h>

#include <string_view>

namespace fp8rl::loss {

enum class LossAggMode {
  token_mean,               // sum over all tokens / global number of response tokens
  seq_mean_token_sum,       // mean over sequences of each sequence's token sum
  seq_mean_token_mean,      // mean over sequences of each sequence's token mean
  seq_mean_token_sum_norm,  // Dr.GRPO: mean over sequences of (token sum / max_response_length)
};

// "token-mean" | "seq-mean-token-sum" | "seq-mean-token-mean" | "seq-mean-token-sum-norm"
// (algorithm.loss_agg_mode); ConfigError listing the valid values otherwise.
LossAggMode parse_loss_agg_mode(std::string_view name);
const char* to_string(LossAggMode mode);

// The normalisers of one optimizer step's mini-batch. Counts come from the EFFECTIVE loss
// mask (after rollout-correction masking), so dropped tokens/sequences do not dilute the loss.
struct AggregationScale {
  double global_num_tokens = 0;    // response tokens in the whole mini-batch, all ranks
  double global_num_seqs = 0;      // sequences with >= 1 response token, whole mini-batch, all ranks
  double max_response_length = 0;  // rollout.max_response_length (the Dr.GRPO constant)

  // Counts of one part (micro-batch or rank); parts are combined with +, then used globally.
  AggregationScale& operator+=(const AggregationScale& other);
};

// Local counts of `mask` [B, T] (bool/float, 1 = response token in the loss); max_response_length
// is copied as is. Sum these over micro-batches and ranks to get the global scale.
AggregationScale count_scale(const at::Tensor& mask, int64_t max_response_length);

// per_token_loss [B, T] float (differentiable), mask [B, T] bool/float (1 = in the loss).
// Returns a 0-dim tensor: this micro-batch's share of the global loss.
// FP8RL_CHECK: the normaliser the mode needs is > 0.
at::Tensor aggregate_loss(const at::Tensor& per_token_loss, const at::Tensor& mask, LossAggMode mode,
                          const AggregationScale& scale);

}  // namespace fp8rl::loss
