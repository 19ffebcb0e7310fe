// Pieces of one RL step that decide what the loss sees (trainer/rl_step.h): DAPO's dynamic
// sampling keeps a group on its scores, not on the shaped rewards, and the loss divisors of a
// mini-batch count only the tokens rollout correction keeps (tis_mode mask), so the token mean is
// over those tokens, as in DAPO's token-level loss.
#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "core/util/error.h"
#include "loss/aggregate.h"
#include "loss/policy_objective.h"
#include "loss/rollout_correction.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "trainer/rl_step.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

namespace {

Sample scored(double score, double reward) {
  Sample s;
  s.score = score;
  s.reward = reward;
  return s;
}

}  // namespace

TEST_CASE("RL step: dynamic sampling keeps a group when its scores differ, whatever the overlong shaping",
          "[trainer][dapo]") {
  // All correct; one sample in the overlong buffer (reward 1 - 1/1024): DAPO drops the group.
  const std::vector<Sample> all_correct{scored(1, 1), scored(1, 1), scored(1, 1), scored(1, 1 - 1.0 / 1024)};
  CHECK_FALSE(group_has_signal(all_correct));
  const std::vector<Sample> all_wrong{scored(0, 0), scored(0, -0.5)};
  CHECK_FALSE(group_has_signal(all_wrong));
  const std::vector<Sample> mixed{scored(0, 0), scored(1, 1), scored(1, 0.9)};
  CHECK(group_has_signal(mixed));
  const std::vector<Sample> one{scored(1, 1)};
  CHECK_FALSE(group_has_signal(one));
}

TEST_CASE("RL step: with tis_mode mask the loss divisors count only the tokens the correction keeps",
          "[trainer][loss]") {
  // Two sequences of 2 and 3 response tokens (T = 3). Token (0, 1) has weight
  // pi_old / pi_rollout = e^1 > cap 2: mask mode drops it; truncation keeps every token.
  SampleTensors old;
  old.logp = at::zeros({2, 3});
  old.mask = at::tensor({1.0f, 1.0f, 0.0f, 1.0f, 1.0f, 1.0f}).view({2, 3});
  const at::Tensor rollout = at::tensor({0.0f, -1.0f, 0.0f, 0.0f, 0.0f, 0.0f}).view({2, 3});
  loss::RolloutCorrectionOptions c;
  c.level = loss::TisLevel::token;
  c.cap = 2.0;
  c.mask_lower = 0.5;
  c.mode = loss::TisMode::truncate;
  CHECK(minibatch_scale(old, rollout, 0, 2, c, 16).global_num_tokens == 5);
  c.mode = loss::TisMode::mask;
  const loss::AggregationScale kept = minibatch_scale(old, rollout, 0, 2, c, 16);
  CHECK(kept.global_num_tokens == 4);
  CHECK(kept.global_num_seqs == 2);
  CHECK(kept.max_response_length == 16);
  // Rows [0, 1) alone: one of its two tokens is left.
  CHECK(minibatch_scale(old, rollout, 0, 1, c, 16).global_num_tokens == 1);
  // No rollout log-probs: no correction, the raw counts.
  CHECK(minibatch_scale(old, at::Tensor(), 0, 2, c, 16).global_num_tokens == 5);

  // The token-mean loss with that scale is the mean over the kept tokens: with every ratio 1
  // (logp = old) and advantage 1 the per-token loss is -1, so the loss is -1 exactly; counted on
  // the raw mask it would be -4/5.
  loss::PolicyObjectiveOptions o;
  o.correction = c;
  loss::PolicyObjectiveInputs in;
  in.logp = old.logp.clone().requires_grad_(true);
  in.old_logp = old.logp;
  in.rollout_logp = rollout;
  in.advantages = at::ones({2});
  in.response_mask = old.mask;
  CHECK(std::abs(loss::policy_objective(in, o, kept).loss.item<double>() + 1.0) < 1e-6);
  // Every token dropped (all weights e^3 > cap): the raw counts, and a zero loss.
  const at::Tensor far = at::full({2, 3}, -3.0f);
  CHECK(minibatch_scale(old, far, 0, 2, c, 16).global_num_tokens == 5);
}

// A prompt the engine refused: for lack of KV cache memory the error names the settings that make
// room; for anything else it quotes the engine's reason at the data line.
TEST_CASE("RL step: a refused prompt is reported as a memory shortage only when it is one", "[trainer]") {
  rollout::GenerateRequest q;
  q.prompt.assign(100, 7);
  q.params.max_new_tokens = 61;
  rollout::RequestOutput o;
  o.finish_reason = rollout::FinishReason::kError;
  o.error = "request 0: one sample needs up to 10 KV blocks of 16 tokens (160 tokens), the pool has only 8";
  o.kv_tokens_needed = 160;
  o.kv_tokens_in_pool = 128;
  REQUIRE_THROWS_CONTAINING(check_engine_output("train.jsonl:3", q, o), ConfigError,
                            "train.jsonl:3: a sample of this prompt (100 tokens, up to 61 new) needs a KV cache of 160 "
                            "tokens, but the one that fit in GPU memory holds 128; raise rollout.gpu_memory_utilization");
  o = rollout::RequestOutput{};
  o.finish_reason = rollout::FinishReason::kError;
  o.error = "request 0: an empty stop string (it would stop every sample at once)";
  REQUIRE_THROWS_CONTAINING(check_engine_output("train.jsonl:3", q, o), ConfigError,
                            "train.jsonl:3: the rollout engine refused the prompt: request 0: an empty stop string");
  o.finish_reason = rollout::FinishReason::kStop;
  check_engine_output("train.jsonl:3", q, o);  // not refused: nothing to say
}
