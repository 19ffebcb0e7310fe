#include "trainer/rl_step.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/util/error.h"
#include "core/util/log.h"
#include "loss/advantages.h"
#include "loss/dapo.h"
#include "loss/policy_objective.h"
#include "loss/rollout_correction.h"
#include "rollout/stop_strings.h"
#include "trainer/reward_command.h"
#include "trainer/stop_tokens.h"
#include "trainer/loss_options.h"

namespace fp8rl::trainer {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The text a reward sees: the response without its stop token, ids the tokenizer lacks skipped,
// cut where a stop string (rollout.stop) starts.
std::string response_text(const Sample& s, const StepInputs& in) {
  const hf::Tokenizer& tok = in.tokenizer;
  size_t len = s.response.size();
  if (!s.truncated && len > 0 &&
      std::find(in.stop_ids.begin(), in.stop_ids.end(), static_cast<int32_t>(s.response.back())) != in.stop_ids.end())
    --len;
  std::vector<int32_t> ids;
  for (size_t i = 0; i < len; ++i)
    if (s.response[i] >= 0 && s.response[i] < tok.vocab_size()) ids.push_back(static_cast<int32_t>(s.response[i]));
  std::string text = tok.decode(ids);
  text.resize(rollout::stop_string_position(text, in.recipe.rollout.stop));
  return text;
}

// The request of one prompt under rollout.* (n samples, sampling knobs, stop tokens); seed 0.
rollout::GenerateRequest rollout_request(const Example& e, const StepInputs& in) {
  const recipe::RolloutConfig& ro = in.recipe.rollout;
  rollout::GenerateRequest q;
  q.prompt = e.prompt_ids;
  q.params.n = static_cast<int32_t>(ro.n);
  q.params.max_new_tokens = static_cast<int32_t>(ro.max_response_length);
  q.params.stop_token_ids = in.stop_ids;
  q.params.stop_strings = ro.stop;
  q.sampling.temperature = ro.temperature;
  q.sampling.top_k = ro.top_k > 0 ? ro.top_k : 0;
  q.sampling.top_p = ro.top_p;
  return q;
}

// The engine over the policy in rollout mode (FP8 GEMMs, no autograd).
std::vector<rollout::GenerateOutput> run_engine(Policy& policy, rollout::Engine& engine,
                                                const std::vector<rollout::GenerateRequest>& requests) {
  Policy::RolloutScope rollout_mode(policy);
  at::NoGradGuard no_grad;
  return engine.generate(requests);
}

// One generation batch: `count` prompts from `order`, their samples scored. Groups numbered from
// `first_group`; `gen_index` separates the seeds of a step's successive batches.
std::vector<Sample> generate_batch(Policy& policy, rollout::Engine& engine, DataOrder& order, const BatchReward& reward,
                                   const StepInputs& in, int64_t count, int64_t first_group, int64_t gen_index,
                                   Metrics& m) {
  const recipe::Recipe& r = in.recipe;
  const std::vector<int64_t> picked = order.next(count);
  std::vector<rollout::GenerateRequest> requests(picked.size());
  const uint64_t step_seed = mix_seed(mix_seed(static_cast<uint64_t>(r.trainer.seed), static_cast<uint64_t>(in.step)),
                                      static_cast<uint64_t>(gen_index));
  for (size_t i = 0; i < picked.size(); ++i) {
    requests[i] = rollout_request(in.examples[static_cast<size_t>(picked[i])], in);
    requests[i].sampling.seed = mix_seed(step_seed, i);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<rollout::GenerateOutput> outs = run_engine(policy, engine, requests);
  m["timing_s/rollout"] += seconds_since(t0);
  m["rollout/generated_tokens"] += static_cast<double>(engine.last_stats().generated_tokens);
  m["rollout/preemptions"] += static_cast<double>(engine.last_stats().preemptions);

  std::vector<Sample> samples;
  for (size_t i = 0; i < outs.size(); ++i) {
    const rollout::RequestOutput& o = outs[i].output;
    if (o.finish_reason == rollout::FinishReason::kError)
      throw ConfigError(cat(in.examples[static_cast<size_t>(picked[i])].where, ": the rollout engine refused the prompt: ", o.error));
    for (const rollout::SampleOutput& so : o.samples) {
      Sample s;
      s.example = picked[i];
      s.group = first_group + static_cast<int64_t>(i);
      s.response.assign(so.tokens.begin(), so.tokens.end());
      s.rollout_logp = so.logprobs;
      s.truncated = so.finish_reason == rollout::FinishReason::kLength;
      samples.push_back(std::move(s));
    }
  }
  // Rewards: the text of each response against its example's reference answer.
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<std::string> texts;
  texts.reserve(samples.size());
  for (const Sample& s : samples) texts.push_back(response_text(s, in));
  std::vector<RewardInput> inputs;
  for (size_t k = 0; k < samples.size(); ++k) {
    const Example& e = in.examples[static_cast<size_t>(samples[k].example)];
    inputs.push_back({e.prompt, texts[k], e.answer});
  }
  const std::vector<double> scores = reward(inputs);
  FP8RL_CHECK(scores.size() == samples.size(), "reward: one score per sample expected");
  for (size_t k = 0; k < samples.size(); ++k) {
    Sample& s = samples[k];
    s.score = scores[k];
    s.reward = s.score + loss::overlong_penalty(static_cast<int64_t>(s.response.size()), r.rollout.max_response_length,
                                                r.reward.overlong_buffer_len, r.reward.overlong_penalty_factor);
  }
  m["timing_s/reward"] += seconds_since(t1);
  return samples;
}

}  // namespace

BatchReward make_batch_reward(const recipe::Recipe& r) {
  if (r.reward.type == "command") {
    auto cmd = std::make_shared<RewardCommand>(r.reward.command);
    return [cmd](const std::vector<RewardInput>& batch) { return cmd->score(batch); };
  }
  RewardFunction fn = make_reward_function(r.reward, r.data.synthetic_task);
  return [fn](const std::vector<RewardInput>& batch) {
    std::vector<double> out;
    out.reserve(batch.size());
    for (const RewardInput& in : batch) out.push_back(fn(in));
    return out;
  };
}

rollout::EngineConfig engine_config(const recipe::Recipe& r, const hf::Tokenizer& tokenizer) {
  rollout::EngineConfig ec;
  if (!r.rollout.stop.empty()) ec.token_bytes = token_byte_table(tokenizer);  // stop strings match on token bytes
  ec.max_num_seqs = static_cast<int32_t>(r.rollout.max_num_seqs);
  ec.enable_prefix_caching = r.rollout.enable_prefix_caching;
  ec.enforce_eager = r.rollout.enforce_eager;
  ec.fp8_kv_cache = r.rollout.kv_cache_dtype == "fp8";
  ec.gpu_memory_utilization = r.rollout.gpu_memory_utilization;
  return ec;
}

RolloutBatch collect_rollouts(Policy& policy, rollout::Engine& engine, DataOrder& order, const BatchReward& reward,
                              const StepInputs& in) {
  const recipe::Recipe& r = in.recipe;
  const int64_t want = r.data.train_batch_size;
  RolloutBatch out;
  Metrics& m = out.metrics;
  std::vector<Sample> all;  // every generated sample, for the response and score metrics
  int64_t gen = 0;
  while (out.num_groups < want && gen < (r.algorithm.filter_groups ? r.algorithm.max_num_gen_batches : 1)) {
    std::vector<Sample> batch = generate_batch(policy, engine, order, reward, in, want, gen * want, gen, m);
    ++gen;
    all.insert(all.end(), batch.begin(), batch.end());
    // Group by group id (contiguous already), keep a group unless filtering drops it.
    for (size_t b = 0; b < batch.size() && out.num_groups < want;) {
      size_t e = b;
      double lo = batch[b].reward, hi = batch[b].reward;
      while (e < batch.size() && batch[e].group == batch[b].group) {
        lo = std::min(lo, batch[e].reward);
        hi = std::max(hi, batch[e].reward);
        ++e;
      }
      if (!r.algorithm.filter_groups || lo != hi) {
        for (size_t k = b; k < e; ++k) out.samples.push_back(batch[k]);
        ++out.num_groups;
      }
      b = e;
    }
  }
  const double n = static_cast<double>(all.size());
  double len_sum = 0, len_max = 0, clipped = 0, score_sum = 0, correct = 0, reward_sum = 0, reward_sq = 0;
  for (const Sample& s : all) {
    len_sum += static_cast<double>(s.response.size());
    len_max = std::max(len_max, static_cast<double>(s.response.size()));
    clipped += s.truncated ? 1 : 0;
    score_sum += s.score;
    correct += s.score >= 1.0 ? 1 : 0;
    reward_sum += s.reward;
    reward_sq += s.reward * s.reward;
  }
  m["reward/mean"] = reward_sum / n;
  m["reward/std"] = std::sqrt(std::max(0.0, reward_sq / n - (reward_sum / n) * (reward_sum / n)));
  m["score/mean"] = score_sum / n;
  m["score/accuracy"] = correct / n;
  m["response_length/mean"] = len_sum / n;
  m["response_length/max"] = len_max;
  m["response_length/clip_ratio"] = clipped / n;
  m["rollout/gen_batches"] = static_cast<double>(gen);
  m["rollout/kept_groups"] = static_cast<double>(out.num_groups);
  m["perf/rollout_tokens_per_s"] = m["rollout/generated_tokens"] / std::max(1e-9, m["timing_s/rollout"]);
  return out;
}

namespace {

SequenceBatch sequences(const std::vector<Sample>& samples, const std::vector<int64_t>& rows, const StepInputs& in) {
  SequenceBatch b;
  for (const int64_t i : rows) {
    const Sample& s = samples[static_cast<size_t>(i)];
    const std::vector<int32_t>& p = in.examples[static_cast<size_t>(s.example)].prompt_ids;
    b.prompts.emplace_back(p.begin(), p.end());
    b.responses.push_back(s.response);
  }
  return b;
}

// [rows, T]: `x` [S, T] restricted to `rows`, padded or cut to T columns.
at::Tensor take_rows(const at::Tensor& x, const at::Tensor& rows, int64_t T) {
  at::Tensor r = x.index_select(0, rows);
  return r.size(1) >= T ? r.narrow(1, 0, T) : at::constant_pad_nd(r, {0, T - r.size(1)});
}

}  // namespace

Metrics validate(Policy& policy, rollout::Engine& engine, const std::vector<Example>& examples,
                 const BatchReward& reward, const StepInputs& in) {
  std::vector<rollout::GenerateRequest> requests(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    requests[i] = rollout_request(examples[i], in);
    requests[i].params.n = 1;
    requests[i].sampling.temperature = 0;  // greedy
  }
  const std::vector<rollout::GenerateOutput> outs = run_engine(policy, engine, requests);
  std::vector<Sample> samples(examples.size());
  std::vector<std::string> texts;
  std::vector<RewardInput> inputs;
  for (size_t i = 0; i < outs.size(); ++i) {
    const rollout::RequestOutput& o = outs[i].output;
    if (o.finish_reason == rollout::FinishReason::kError)
      throw ConfigError(cat(examples[i].where, ": the rollout engine refused the prompt: ", o.error));
    samples[i].response.assign(o.samples.at(0).tokens.begin(), o.samples.at(0).tokens.end());
    samples[i].truncated = o.samples.at(0).finish_reason == rollout::FinishReason::kLength;
    texts.push_back(response_text(samples[i], in));
  }
  for (size_t i = 0; i < examples.size(); ++i) inputs.push_back({examples[i].prompt, texts[i], examples[i].answer});
  const std::vector<double> scores = reward(inputs);
  double correct = 0, score = 0, len = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    correct += scores[i] >= 1.0 ? 1 : 0;
    score += scores[i];
    len += static_cast<double>(samples[i].response.size());
  }
  const double n = static_cast<double>(std::max<size_t>(1, scores.size()));
  return {{"val/accuracy", correct / n}, {"val/score", score / n}, {"val/response_length", len / n}};
}

SampleTensors sample_logprobs(const Policy& policy, const std::vector<Sample>& samples, const StepInputs& in) {
  at::NoGradGuard no_grad;
  const int64_t S = static_cast<int64_t>(samples.size());
  int64_t T = 1;
  for (const Sample& s : samples) T = std::max<int64_t>(T, static_cast<int64_t>(s.response.size()));
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(policy.model().device());
  SampleTensors out{at::zeros({S, T}, f32), at::zeros({S, T}, f32)};
  const int64_t micro = in.recipe.trainer.ppo_micro_batch_size_per_gpu;
  for (int64_t b = 0; b < S; b += micro) {
    std::vector<int64_t> rows;
    for (int64_t i = b; i < std::min(S, b + micro); ++i) rows.push_back(i);
    const ResponseLogprobs lp = policy.response_logprobs(sequences(samples, rows, in), in.recipe.rollout.temperature);
    const int64_t t = lp.logp.size(1);
    out.logp.narrow(0, b, static_cast<int64_t>(rows.size())).narrow(1, 0, t).copy_(lp.logp);
    out.mask.narrow(0, b, static_cast<int64_t>(rows.size())).narrow(1, 0, t).copy_(lp.mask);
  }
  return out;
}

at::Tensor rollout_logprobs(const std::vector<Sample>& samples, int64_t T, at::Device device) {
  at::Tensor out = at::zeros({static_cast<int64_t>(samples.size()), T}, at::kFloat);
  float* p = out.data_ptr<float>();
  for (size_t i = 0; i < samples.size(); ++i)
    for (size_t j = 0; j < samples[i].rollout_logp.size() && static_cast<int64_t>(j) < T; ++j)
      p[static_cast<int64_t>(i) * T + static_cast<int64_t>(j)] = samples[i].rollout_logp[j];
  return out.to(device);
}

Metrics mismatch_metrics(const at::Tensor& old_logp, const at::Tensor& rollout_logp, const at::Tensor& mask,
                         const recipe::AlgorithmConfig& algorithm) {
  Metrics m;
  const loss::RolloutCorrection c =
      loss::rollout_correction(old_logp, rollout_logp, mask, policy_objective_options(algorithm).correction);
  // The sums below in one device-to-host copy.
  const at::Tensor sums = at::stack({mask.sum(), (old_logp * mask).sum(), (rollout_logp * mask).sum(),
                                     ((old_logp - rollout_logp).abs().exp() * mask).sum()})
                              .to(at::kCPU, at::kDouble);
  const double* s = sums.data_ptr<double>();
  const double tokens = std::max(1.0, s[0]);
  const double old_mean = s[1] / tokens;
  const double roll_mean = s[2] / tokens;
  m["rollout_corr/kl"] = c.metrics.kl_k1;
  m["rollout_corr/k3_kl"] = c.metrics.kl_k3;
  m["rollout_corr/training_ppl"] = std::exp(-old_mean);
  m["rollout_corr/rollout_ppl"] = std::exp(-roll_mean);
  m["rollout_corr/log_ppl_diff"] = roll_mean - old_mean;  // log(training_ppl) - log(rollout_ppl)
  m["rollout_corr/rollout_is_mean"] = c.metrics.is_weight_mean;
  m["rollout_corr/rollout_is_min"] = c.metrics.is_weight_min;
  m["rollout_corr/rollout_is_max"] = c.metrics.is_weight_max;
  m["rollout_corr/rollout_is_eff_sample_size"] = c.metrics.ess;
  m["rollout_corr/frac_corrected"] = c.metrics.frac_corrected;
  m["rollout_corr/abs_logp_diff_max"] = c.metrics.abs_diff_max;
  m["rollout_corr/token_mult_prob_error"] = s[3] / tokens - 1.0;
  return m;
}

Metrics ppo_update(Policy& policy, AdamW& optimizer, const RolloutBatch& batch, const SampleTensors& old,
                   const at::Tensor& rollout_logp, const at::Tensor& ref_logp, const StepInputs& in) {
  const recipe::Recipe& r = in.recipe;
  const at::Device dev = policy.model().device();
  const int64_t S = static_cast<int64_t>(batch.samples.size());
  Metrics m;
  if (S == 0) return m;
  std::vector<double> rewards;
  std::vector<int64_t> groups;
  for (const Sample& s : batch.samples) {
    rewards.push_back(s.reward);
    groups.push_back(s.group);
  }
  const at::Tensor adv = loss::compute_advantages(at::tensor(rewards, at::kDouble), at::tensor(groups, at::kLong),
                                                  advantage_options(r.algorithm))
                             .to(at::kFloat)
                             .to(dev);  // [S]
  const loss::PolicyObjectiveOptions objective = policy_objective_options(r.algorithm);
  const int64_t per_mini = r.trainer.ppo_mini_batch_size * r.rollout.n;  // samples per optimizer step
  const int64_t micro = r.trainer.ppo_micro_batch_size_per_gpu;
  int64_t micro_count = 0;
  double grad_norm_sum = 0, sync_seconds = 0;
  int64_t updates = 0;
  for (int64_t epoch = 0; epoch < r.trainer.ppo_epochs; ++epoch) {
    for (int64_t mb = 0; mb < S; mb += per_mini) {
      const int64_t mb_end = std::min(S, mb + per_mini);
      const loss::AggregationScale scale =
          loss::count_scale(old.mask.narrow(0, mb, mb_end - mb), r.rollout.max_response_length);
      for (int64_t b = mb; b < mb_end; b += micro) {
        std::vector<int64_t> rows;
        for (int64_t i = b; i < std::min(mb_end, b + micro); ++i) rows.push_back(i);
        const at::Tensor rows_t = at::tensor(rows, at::kLong).to(dev);
        const ResponseLogprobs cur = policy.response_logprobs(sequences(batch.samples, rows, in), r.rollout.temperature);
        const int64_t t = cur.logp.size(1);
        loss::PolicyObjectiveInputs pin;
        pin.logp = cur.logp;
        pin.entropy = cur.entropy;
        pin.response_mask = cur.mask;
        pin.old_logp = take_rows(old.logp, rows_t, t);
        if (rollout_logp.defined()) pin.rollout_logp = take_rows(rollout_logp, rows_t, t);
        if (ref_logp.defined()) pin.ref_logp = take_rows(ref_logp, rows_t, t);
        pin.advantages = adv.index_select(0, rows_t);
        const loss::PolicyObjective obj = loss::policy_objective(pin, objective, scale);
        obj.loss.backward();
        for (const auto& [k, v] : obj.metrics)
          if (k.rfind("mismatch/", 0) != 0) m["actor/" + k] += v;
        ++micro_count;
      }
      const double norm = optimizer.clip_grad_norm(r.trainer.grad_clip);
      const double lr = scheduled_lr(r.trainer.lr, optimizer.steps(), r.trainer.lr_warmup_steps,
                                     r.trainer.total_training_steps * r.trainer.ppo_epochs *
                                         (r.data.train_batch_size / r.trainer.ppo_mini_batch_size),
                                     r.trainer.lr_scheduler);
      if (std::isfinite(norm)) {
        optimizer.step(lr);
        const auto t_sync = std::chrono::steady_clock::now();
        policy.sync_weights();  // full fine-tuning: FP8 re-quantization in place (LoRA: a version bump)
        sync_seconds += seconds_since(t_sync);
      } else {
        optimizer.zero_grad();  // verl's rule: a non-finite gradient norm skips the update
        m["actor/skipped_updates"] += 1;
      }
      grad_norm_sum += norm;
      m["actor/lr"] = lr;
      ++updates;
    }
  }
  for (auto& [k, v] : m)
    if (k != "actor/lr" && k != "actor/skipped_updates") v /= static_cast<double>(std::max<int64_t>(1, micro_count));
  m["actor/grad_norm"] = grad_norm_sum / static_cast<double>(std::max<int64_t>(1, updates));
  m["timing_s/sync"] = sync_seconds;  // inside timing_s/update
  return m;
}

}  // namespace fp8rl::trainer
