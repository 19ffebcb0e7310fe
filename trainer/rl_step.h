// The phases of one GRPO/DAPO step (DESIGN.md "One training step"), each a function the loop in
// train.cpp calls in order:
//
//   collect_rollouts   prompts -> engine (same process, same weights) -> rewards -> DAPO filter
//   sample_logprobs    the trainer's recompute of the old log-probs (and the reference's)
//   ppo_update         advantages -> PPO mini-batches with truncated importance sampling ->
//                      optimizer steps -> weight sync
//
// Samples stay grouped: the n samples of one prompt are contiguous and share a group id, so the
// advantage's group statistics and the DAPO filter see whole groups.
//
// Data parallelism (StepInputs::comm, trainer/collective.h): every rank draws the same prompts
// and generates its contiguous share of them (whole groups, seeded by their index in the whole
// batch, so a sample is the same whatever the world size); the samples are then gathered, so
// every rank holds the whole batch and makes the same filter and advantage decisions. For the
// update each rank takes its share of every mini-batch; its old log-probs are summed into the
// whole [S, T] tensor, and gradients are summed over ranks before clipping and the optimizer
// step, which every rank then takes identically. The token counts that normalise the loss are
// those of the whole mini-batch, so the summed gradient is the single-process one.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/hf/tokenizer.h"
#include "core/recipe/recipe.h"
#include "loss/aggregate.h"
#include "loss/rollout_correction.h"
#include "rollout/engine.h"
#include "trainer/collective.h"
#include "trainer/data.h"
#include "trainer/optimizer.h"
#include "trainer/policy.h"
#include "trainer/rewards.h"

namespace fp8rl::trainer {

using Metrics = std::map<std::string, double>;

// Scores a batch of responses (built-in reward functions sample by sample; an external command
// in one exchange).
using BatchReward = std::function<std::vector<double>(const std::vector<RewardInput>&)>;

// The recipe's reward (reward.type; `command` starts its process now) as a batch function.
BatchReward make_batch_reward(const recipe::Recipe& recipe);

// The engine settings of rollout.* (max_num_seqs, prefix caching, gpu_memory_utilization, the
// kernel paths; the tokenizer's token bytes when rollout.stop holds stop strings). The one
// translation of the recipe's rollout section: `fp8rl generate` uses it too.
rollout::EngineConfig engine_config(const recipe::RolloutConfig& rollout, const hf::Tokenizer& tokenizer);

struct Sample {
  int64_t example = 0;               // index into the examples
  int64_t group = 0;                 // GRPO group: one per prompt of the step
  std::vector<int64_t> response;     // generated ids, a final stop token included
  std::vector<float> rollout_logp;   // the engine's log-prob of each (fp32)
  bool truncated = false;            // stopped by max_response_length
  double score = 0;                  // the reward function's
  double reward = 0;                 // score + DAPO overlong shaping
};

struct RolloutBatch {
  std::vector<Sample> samples;  // grouped
  int64_t num_groups = 0;
  Metrics metrics;              // response lengths, scores, filter counts, engine stats
};

struct StepInputs {
  const recipe::Recipe& recipe;
  const std::vector<Example>& examples;
  const hf::Tokenizer& tokenizer;
  const std::vector<int32_t>& stop_ids;
  int64_t step = 0;  // 0-based RL step: seeds every sample of it
  Collective* comm = nullptr;  // the ranks of a data-parallel run; nullptr: this process alone
};

// Draws data.train_batch_size prompts from `order`, generates rollout.n samples each and scores
// them. With algorithm.filter_groups (DAPO dynamic sampling), groups without signal
// (group_has_signal) are dropped and further batches drawn, up to algorithm.max_num_gen_batches, until
// train_batch_size groups are kept (fewer if the limit is reached; zero is possible).
RolloutBatch collect_rollouts(Policy& policy, rollout::Engine& engine, DataOrder& order, const BatchReward& reward,
                              const StepInputs& in);

// DAPO dynamic sampling's test of one group: false when every sample has the same score. On the
// score, the reward function's own, not the reward after overlong shaping: DAPO drops the groups
// whose accuracy is 0 or 1, and an overlong penalty on one sample of an all-correct group would
// otherwise keep it, where GRPO's division by the group's std turns that small penalty into
// full-size advantages.
bool group_has_signal(std::span<const Sample> group);

// Throws where the engine refused request q (o.finish_reason kError); `where` names its data line.
// A request one of whose samples needs more KV cache than fit in GPU memory at this rollout
// (o.kv_tokens_needed, set by the scheduler) is refused for memory, not for its data: the error
// then names the settings that make room.
void check_engine_output(const std::string& where, const rollout::GenerateRequest& q, const rollout::RequestOutput& o);

// Log-probs [S, T] (fp32, T = longest response, zero past each) of the samples' responses under
// the trainer's forward, without autograd, in micro-batches of trainer.ppo_micro_batch_size_per_gpu.
// With several ranks each computes the rows it will train on (train_rows) and the result is
// summed over ranks: every rank returns the whole tensor.
struct SampleTensors {
  at::Tensor logp;  // [S, T]
  at::Tensor mask;  // [S, T]
};
SampleTensors sample_logprobs(const Policy& policy, const std::vector<Sample>& samples, const StepInputs& in);

// The rows of S samples this rank trains on: its share of each mini-batch of `per_mini` samples.
std::vector<int64_t> train_rows(int64_t S, int64_t per_mini, const Collective* comm);

// Per-rank sums of `local` (keys may differ between ranks) added up over all ranks.
Metrics sum_over_ranks(const Metrics& local, Collective* comm);

// The loss divisors of mini-batch rows [begin, begin + rows), counted on the effective loss mask
// (loss/policy_objective.h): with tis_mode mask, the tokens or sequences rollout correction drops
// are not in the loss, so they are not in its denominators either (DAPO's token mean is over the
// tokens kept). A mini-batch with every token dropped keeps the raw counts (its loss is 0 anyway).
loss::AggregationScale minibatch_scale(const SampleTensors& old, const at::Tensor& rollout_logp, int64_t begin,
                                       int64_t rows, const loss::RolloutCorrectionOptions& correction,
                                       int64_t max_response_length);

// The engine's log-probs in the same [S, T] layout.
at::Tensor rollout_logprobs(const std::vector<Sample>& samples, int64_t T, at::Device device);

// Advantages, then trainer.ppo_epochs passes of PPO mini-batches (trainer.ppo_mini_batch_size
// groups each) in micro-batches with gradient accumulation; after each mini-batch: clip, AdamW
// step at the scheduled lr, weight sync. Returns the actor metrics (averaged over micro-batches).
Metrics ppo_update(Policy& policy, AdamW& optimizer, const RolloutBatch& batch, const SampleTensors& old,
                   const at::Tensor& rollout_logp, const at::Tensor& ref_logp, const StepInputs& in);

// Validation (trainer.test_freq): one greedy sample per example of `examples` (pass@1 with
// greedy decoding), scored by `reward`; the examples are shared out over the ranks. Returns val/accuracy (score >= 1), val/score and
// val/response_length.
Metrics validate(Policy& policy, rollout::Engine& engine, const std::vector<Example>& examples,
                 const BatchReward& reward, const StepInputs& in);

// The rollout-correction metrics of the whole batch under verl's names (rollout_corr/...), plus
// NVIDIA's token-multiplicative probability error mean(exp|old - rollout|) - 1.
Metrics mismatch_metrics(const at::Tensor& old_logp, const at::Tensor& rollout_logp, const at::Tensor& mask,
                         const recipe::AlgorithmConfig& algorithm);

}  // namespace fp8rl::trainer
