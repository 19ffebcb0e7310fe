// Reducing a per-token loss matrix to the scalar that is differentiated (loss_agg_mode).
//
// The normalisers are GLOBAL: counts over the whole mini-batch (all micro-batches, all ranks),
// passed in by the caller. Each micro-batch's aggregate is then its share of the whole-batch
// loss, so summing micro-batch losses (gradient accumulation, and the all-reduce sum over
// ranks) gives exactly the whole-batch loss and gradient, whatever the micro-batch split.
//
// seq-mean-token-sum-norm follows verl (core_algos.agg_loss), not a mean over sequences: the
// token sum of the whole mini-batch divided by the constant max_response_length only, i.e.
// verl with actor.loss_scale_factor = max_response_length. Despite the name there is no division
// by the number of sequences (verl's docs: it "turns off seq-dim averaging"); the Dr.GRPO paper
// writes a 1/G in front of its objective, and verl drops it; so do we. The loss therefore grows
// with the mini-batch size. Deliberate differences from verl: verl's default divisor is the
// batch's padded response length (loss_mask.shape[-1]) unless loss_scale_factor is set, and its
// trainers then scale micro-batch losses by 1/gradient_accumulation (legacy dp_actor) and
// average gradients over data-parallel ranks, so verl's effective divisor also depends on how
// the batch is split; here it does not (micro-batch and rank shares are summed). The magnitude
// therefore differs from verl's by that split: a mini-batch verl runs as 16 micro-batches on 4
// ranks gives here a loss and gradient 64 times verl's. AdamW's steps barely notice, but a
// grad_clip threshold (and the grad_norm metric) does not carry over from a verl recipe.
#pragma once

#include <ATen/ATen.h>

#include <string_view>

namespace fp8rl::loss {

enum class LossAggMode {
  token_mean,               // sum over all tokens / global number of response tokens
  seq_mean_token_sum,       // mean over sequences of each sequence's token sum
  seq_mean_token_mean,      // mean over sequences of each sequence's token mean
  seq_mean_token_sum_norm,  // Dr.GRPO as verl: sum over all tokens / max_response_length (no seq mean)
};

// "token-mean" | "seq-mean-token-sum" | "seq-mean-token-mean" | "seq-mean-token-sum-norm"
// (algorithm.loss_agg_mode); ConfigError listing the valid values otherwise. For the trainer,
// once, when it reads the recipe: aggregate_loss() takes the enum.
LossAggMode parse_loss_agg_mode(std::string_view name);
const char* to_string(LossAggMode mode);

// The normalisers of one optimizer step's mini-batch. Counts come from the EFFECTIVE loss
// mask (after rollout-correction masking), so dropped tokens/sequences do not dilute the loss.
struct AggregationScale {
  double global_num_tokens = 0;    // response tokens in the whole mini-batch, all ranks
  double global_num_seqs = 0;      // sequences with >= 1 response token, whole mini-batch, all ranks
                                   // (the seq-mean-* modes; seq-mean-token-sum-norm does not use it)
  double max_response_length = 0;  // rollout.max_response_length (the Dr.GRPO constant; only
                                   // seq-mean-token-sum-norm uses it)

  // Counts of one part (micro-batch or rank); parts are combined with +, then used globally.
  // max_response_length is not summed: a default (0) accumulator takes the parts' value, and
  // parts with different nonzero values are an FP8RL_CHECK failure.
  AggregationScale& operator+=(const AggregationScale& other);
};

// Local counts of `mask` [B, T] (bool/float, 1 = response token in the loss); max_response_length
// is copied as is. Sum these over micro-batches and ranks to get the global scale.
AggregationScale count_scale(const at::Tensor& mask, int64_t max_response_length);

// per_token_loss [B, T] float (differentiable), mask [B, T] bool/float (1 = in the loss).
// Returns a 0-dim tensor: this micro-batch's share of the global loss.
// FP8RL_CHECK: the normaliser the mode needs is > 0 (token-mean: global_num_tokens;
// seq-mean-token-sum and seq-mean-token-mean: global_num_seqs; seq-mean-token-sum-norm:
// max_response_length, so an all-masked mini-batch gives 0 there rather than an error).
at::Tensor aggregate_loss(const at::Tensor& per_token_loss, const at::Tensor& mask, LossAggMode mode,
                          const AggregationScale& scale);

}  // namespace fp8rl::loss
