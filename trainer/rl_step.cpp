#include "trainer/rl_step.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <bit>
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

// Samples as int64 words for the gather between ranks: per sample example, group, truncated,
// score and reward (IEEE bits), the response length, the tokens, the log-probs (float bits).
std::vector<int64_t> pack_samples(const std::vector<Sample>& samples) {
  std::vector<int64_t> w;
  for (const Sample& s : samples) {
    w.insert(w.end(), {s.example, s.group, s.truncated ? 1 : 0, std::bit_cast<int64_t>(s.score),
                       std::bit_cast<int64_t>(s.reward), static_cast<int64_t>(s.response.size()),
                       static_cast<int64_t>(s.rollout_logp.size())});
    w.insert(w.end(), s.response.begin(), s.response.end());
    for (const float x : s.rollout_logp) w.push_back(std::bit_cast<int32_t>(x));
  }
  return w;
}

void unpack_samples(const std::vector<int64_t>& w, std::vector<Sample>& out) {
  for (size_t i = 0; i < w.size();) {
    FP8RL_CHECK(i + 7 <= w.size(), "sample gather: truncated record");
    Sample s;
    s.example = w[i];
    s.group = w[i + 1];
    s.truncated = w[i + 2] != 0;
    s.score = std::bit_cast<double>(w[i + 3]);
    s.reward = std::bit_cast<double>(w[i + 4]);
    const auto n = static_cast<size_t>(w[i + 5]), k = static_cast<size_t>(w[i + 6]);
    i += 7;
    FP8RL_CHECK(i + n + k <= w.size(), "sample gather: truncated record");
    s.response.assign(w.begin() + static_cast<std::ptrdiff_t>(i), w.begin() + static_cast<std::ptrdiff_t>(i + n));
    i += n;
    for (size_t j = 0; j < k; ++j) s.rollout_logp.push_back(std::bit_cast<float>(static_cast<int32_t>(w[i + j])));
    i += k;
    out.push_back(std::move(s));
  }
}

Collective& comm_of(const StepInputs& in) {
  static Collective single;
  return in.comm != nullptr ? *in.comm : single;
}

// One generation batch: `count` prompts from `order`, their samples scored, every rank's share
// gathered. Groups numbered from `first_group`; `gen_index` separates the seeds of a step's
// successive batches.
std::vector<Sample> generate_batch(Policy& policy, rollout::Engine& engine, DataOrder& order, const BatchReward& reward,
                                   const StepInputs& in, int64_t count, int64_t first_group, int64_t gen_index,
                                   Metrics& m) {
  const recipe::Recipe& r = in.recipe;
  Collective& comm = comm_of(in);
  const std::vector<int64_t> picked = order.next(count);  // the same on every rank
  const RowRange mine = rank_rows(static_cast<int64_t>(picked.size()), comm.rank(), comm.world_size());
  std::vector<rollout::GenerateRequest> requests;
  const uint64_t step_seed = mix_seed(mix_seed(static_cast<uint64_t>(r.trainer.seed), static_cast<uint64_t>(in.step)),
                                      static_cast<uint64_t>(gen_index));
  for (int64_t i = mine.begin; i < mine.end; ++i) {
    requests.push_back(rollout_request(in.examples[static_cast<size_t>(picked[static_cast<size_t>(i)])], in));
    requests.back().sampling.seed = mix_seed(step_seed, static_cast<uint64_t>(i));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<rollout::GenerateOutput> outs =
      requests.empty() ? std::vector<rollout::GenerateOutput>{} : run_engine(policy, engine, requests);
  const double rollout_s = seconds_since(t0);
  const double local_tokens = requests.empty() ? 0.0 : static_cast<double>(engine.last_stats().generated_tokens);
  const double local_preemptions = requests.empty() ? 0.0 : static_cast<double>(engine.last_stats().preemptions);

  std::vector<Sample> samples;
  for (size_t i = 0; i < outs.size(); ++i) {
    const int64_t global = mine.begin + static_cast<int64_t>(i);
    const int64_t example = picked[static_cast<size_t>(global)];
    const rollout::RequestOutput& o = outs[i].output;
    check_engine_output(in.examples[static_cast<size_t>(example)].where, requests[i], o);
    for (const rollout::SampleOutput& so : o.samples) {
      Sample s;
      s.example = example;
      s.group = first_group + global;
      s.response.assign(so.tokens.begin(), so.tokens.end());
      s.rollout_logp = so.logprobs;
      s.truncated = so.finish_reason == rollout::FinishReason::kLength;
      samples.push_back(std::move(s));
    }
  }
  // Rewards: the text of each response against its example's reference answer.
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<RewardInput> inputs;
  inputs.reserve(samples.size());
  for (const Sample& s : samples) {
    const Example& e = in.examples[static_cast<size_t>(s.example)];
    inputs.push_back({e.prompt, response_text(s, in), e.answer});
  }
  const std::vector<double> scores = inputs.empty() ? std::vector<double>{} : reward(inputs);
  FP8RL_CHECK(scores.size() == samples.size(), "reward: one score per sample expected");
  for (size_t k = 0; k < samples.size(); ++k) {
    Sample& s = samples[k];
    s.score = scores[k];
    s.reward = s.score + loss::overlong_penalty(static_cast<int64_t>(s.response.size()), r.rollout.max_response_length,
                                                r.reward.overlong_buffer_len, r.reward.overlong_penalty_factor);
  }
  const double reward_s = seconds_since(t1);
  // Phase times are the slowest rank's; counts are summed.
  m["timing_s/rollout"] += comm.all_reduce_max(rollout_s);
  m["timing_s/reward"] += comm.all_reduce_max(reward_s);
  m["rollout/generated_tokens"] += comm.all_reduce_sum(local_tokens);
  m["rollout/preemptions"] += comm.all_reduce_sum(local_preemptions);
  if (comm.world_size() == 1) return samples;
  std::vector<Sample> all;
  for (const std::vector<int64_t>& words : comm.all_gather_words(pack_samples(samples))) unpack_samples(words, all);
  return all;
}

}  // namespace

BatchReward make_batch_reward(const recipe::Recipe& r) {
  if (r.reward.type == "command") {
    auto cmd = std::make_shared<RewardCommand>(r.reward.command, r.reward.timeout_s);
    cmd->expect_running(0.5);  // a mistyped program: exit 2 now, not after the first rollout
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

void check_engine_output(const std::string& where, const rollout::GenerateRequest& q, const rollout::RequestOutput& o) {
  if (o.finish_reason != rollout::FinishReason::kError) return;
  if (o.kv_tokens_needed > 0)
    throw ConfigError(cat(where, ": a sample of this prompt (", q.prompt.size(), " tokens, up to ", q.params.max_new_tokens,
                          " new) needs a KV cache of ", o.kv_tokens_needed, " tokens, but the one that fit in GPU memory holds ",
                          o.kv_tokens_in_pool, "; raise rollout.gpu_memory_utilization, or lower data.max_prompt_length or ",
                          "rollout.max_response_length"));
  throw ConfigError(cat(where, ": the rollout engine refused the prompt: ", o.error));
}

rollout::EngineConfig engine_config(const recipe::RolloutConfig& ro, const hf::Tokenizer& tokenizer) {
  rollout::EngineConfig ec;
  if (!ro.stop.empty()) ec.token_bytes = token_byte_table(tokenizer);  // stop strings match on token bytes
  ec.max_num_seqs = static_cast<int32_t>(ro.max_num_seqs);
  ec.enable_prefix_caching = ro.enable_prefix_caching;
  ec.enforce_eager = ro.enforce_eager;
  ec.async_scheduling = ro.async_scheduling;
  using SharedPrefix = rollout::EngineConfig::SharedPrefixDecode;
  ec.shared_prefix_decode = ro.shared_prefix_decode == "true"    ? SharedPrefix::on
                            : ro.shared_prefix_decode == "false" ? SharedPrefix::off
                                                                 : SharedPrefix::by_size;
  ec.split_mixed_steps = ro.split_mixed_steps;
  ec.keep_decode_graphs = ro.keep_decode_graphs;
  ec.fp8_kv_cache = ro.kv_cache_dtype == "fp8";
  ec.gpu_memory_utilization = ro.gpu_memory_utilization;
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
      while (e < batch.size() && batch[e].group == batch[b].group) ++e;
      if (!r.algorithm.filter_groups || group_has_signal(std::span<const Sample>(batch).subspan(b, e - b))) {
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

loss::AggregationScale minibatch_scale(const SampleTensors& old, const at::Tensor& rollout_logp, int64_t begin,
                                       int64_t rows, const loss::RolloutCorrectionOptions& correction,
                                       int64_t max_response_length) {
  const at::Tensor mask = old.mask.narrow(0, begin, rows);  // [rows, T]
  const loss::AggregationScale raw = loss::count_scale(mask, max_response_length);
  if (!rollout_logp.defined() || correction.mode != loss::TisMode::mask) return raw;
  const loss::AggregationScale kept = loss::count_scale(
      loss::rollout_correction(old.logp.narrow(0, begin, rows), rollout_logp.narrow(0, begin, rows), mask, correction)
          .mask,
      max_response_length);
  return kept.global_num_tokens > 0 ? kept : raw;
}

bool group_has_signal(std::span<const Sample> group) {
  for (const Sample& s : group)
    if (s.score != group.front().score) return true;
  return false;
}

Metrics validate(Policy& policy, rollout::Engine& engine, const std::vector<Example>& examples,
                 const BatchReward& reward, const StepInputs& in) {
  Collective& comm = comm_of(in);
  const RowRange mine = rank_rows(static_cast<int64_t>(examples.size()), comm.rank(), comm.world_size());
  const auto n_mine = static_cast<size_t>(mine.end - mine.begin);
  std::vector<rollout::GenerateRequest> requests(n_mine);
  for (size_t i = 0; i < n_mine; ++i) {
    requests[i] = rollout_request(examples[static_cast<size_t>(mine.begin) + i], in);
    requests[i].params.n = 1;
    requests[i].sampling.temperature = 0;  // greedy
  }
  const std::vector<rollout::GenerateOutput> outs =
      requests.empty() ? std::vector<rollout::GenerateOutput>{} : run_engine(policy, engine, requests);
  std::vector<Sample> samples(n_mine);
  std::vector<RewardInput> inputs;
  for (size_t i = 0; i < outs.size(); ++i) {
    const Example& e = examples[static_cast<size_t>(mine.begin) + i];
    const rollout::RequestOutput& o = outs[i].output;
    check_engine_output(e.where, requests[i], o);
    samples[i].response.assign(o.samples.at(0).tokens.begin(), o.samples.at(0).tokens.end());
    samples[i].truncated = o.samples.at(0).finish_reason == rollout::FinishReason::kLength;
    inputs.push_back({e.prompt, response_text(samples[i], in), e.answer});
  }
  const std::vector<double> scores = inputs.empty() ? std::vector<double>{} : reward(inputs);
  Metrics sums{{"correct", 0.0}, {"score", 0.0}, {"length", 0.0}};
  for (size_t i = 0; i < scores.size(); ++i) {
    sums["correct"] += scores[i] >= 1.0 ? 1 : 0;
    sums["score"] += scores[i];
    sums["length"] += static_cast<double>(samples[i].response.size());
  }
  sums = sum_over_ranks(sums, &comm);
  const double n = static_cast<double>(std::max<size_t>(1, examples.size()));
  return {{"val/accuracy", sums["correct"] / n}, {"val/score", sums["score"] / n}, {"val/response_length", sums["length"] / n}};
}

std::vector<int64_t> train_rows(int64_t S, int64_t per_mini, const Collective* comm) {
  const int rank = comm != nullptr ? comm->rank() : 0, world = comm != nullptr ? comm->world_size() : 1;
  std::vector<int64_t> rows;
  for (int64_t mb = 0; mb < S; mb += per_mini) {
    const RowRange r = rank_rows(std::min(S, mb + per_mini) - mb, rank, world);
    for (int64_t i = r.begin; i < r.end; ++i) rows.push_back(mb + i);
  }
  return rows;
}

Metrics sum_over_ranks(const Metrics& local, Collective* comm) {
  if (comm == nullptr || comm->world_size() == 1) return local;
  // Each rank's map as words (key length, key bytes, value bits), gathered and added up, so
  // ranks whose maps hold different keys (one that had no rows) still agree.
  std::vector<int64_t> w;
  for (const auto& [k, v] : local) {
    w.push_back(static_cast<int64_t>(k.size()));
    for (const char c : k) w.push_back(static_cast<unsigned char>(c));
    w.push_back(std::bit_cast<int64_t>(v));
  }
  Metrics total;
  for (const std::vector<int64_t>& words : comm->all_gather_words(w)) {
    for (size_t i = 0; i < words.size();) {
      const auto n = static_cast<size_t>(words[i++]);
      FP8RL_CHECK(i + n + 1 <= words.size(), "metric gather: truncated record");
      std::string key;
      for (size_t j = 0; j < n; ++j) key.push_back(static_cast<char>(words[i + j]));
      i += n;
      total[key] += std::bit_cast<double>(words[i++]);
    }
  }
  return total;
}

SampleTensors sample_logprobs(const Policy& policy, const std::vector<Sample>& samples, const StepInputs& in) {
  at::NoGradGuard no_grad;
  const int64_t S = static_cast<int64_t>(samples.size());
  int64_t T = 1;
  for (const Sample& s : samples) T = std::max<int64_t>(T, static_cast<int64_t>(s.response.size()));
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(policy.model().device());
  SampleTensors out{at::zeros({S, T}, f32), at::zeros({S, T}, f32)};
  const std::vector<int64_t> mine = train_rows(S, in.recipe.trainer.ppo_mini_batch_size * in.recipe.rollout.n, in.comm);
  const auto micro = static_cast<size_t>(in.recipe.trainer.ppo_micro_batch_size_per_gpu);
  for (size_t b = 0; b < mine.size(); b += micro) {
    const std::vector<int64_t> rows(mine.begin() + static_cast<std::ptrdiff_t>(b),
                                    mine.begin() + static_cast<std::ptrdiff_t>(std::min(mine.size(), b + micro)));
    const ResponseLogprobs lp = policy.response_logprobs(sequences(samples, rows, in), in.recipe.rollout.temperature);
    const int64_t t = lp.logp.size(1);
    const at::Tensor idx = at::tensor(rows, at::kLong).to(out.logp.device());
    out.logp.narrow(1, 0, t).index_copy_(0, idx, lp.logp.to(at::kFloat));
    out.mask.narrow(1, 0, t).index_copy_(0, idx, lp.mask.to(at::kFloat));
  }
  // Rows of other ranks are zero here: the sum over ranks is the whole tensor.
  Collective& comm = comm_of(in);
  comm.all_reduce_sum(out.logp);
  comm.all_reduce_sum(out.mask);
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
  Collective& comm = comm_of(in);
  int64_t micro_count = 0;
  double grad_norm_sum = 0, sync_seconds = 0, last_norm = 0;
  int64_t finite_updates = 0;
  int64_t updates = 0;
  for (int64_t epoch = 0; epoch < r.trainer.ppo_epochs; ++epoch) {
    for (int64_t mb = 0; mb < S; mb += per_mini) {
      const int64_t mb_end = std::min(S, mb + per_mini);
      const loss::AggregationScale scale = minibatch_scale(old, rollout_logp, mb, mb_end - mb, objective.correction,
                                                           r.rollout.max_response_length);
      const RowRange mine = rank_rows(mb_end - mb, comm.rank(), comm.world_size());  // this rank's share
      for (int64_t b = mb + mine.begin; b < mb + mine.end; b += micro) {
        std::vector<int64_t> rows;
        for (int64_t i = b; i < std::min(mb + mine.end, b + micro); ++i) rows.push_back(i);
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
      comm.all_reduce_grads(optimizer.parameters());  // the whole mini-batch's gradient on every rank
      const double norm = optimizer.clip_grad_norm(r.trainer.grad_clip);
      // Scheduled by RL step, as verl steps its scheduler once per step: warm-up and cosine
      // horizon in RL steps, so dynamic sampling (fewer mini-batches) and skipped updates do not
      // move them, and verl recipes' lr_warmup_steps mean the same here.
      const double lr = scheduled_lr(r.trainer.lr, in.step, r.trainer.lr_warmup_steps, r.trainer.total_training_steps,
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
      if (std::isfinite(norm)) {  // a skipped update's inf/NaN would swamp the mean
        grad_norm_sum += norm;
        ++finite_updates;
      }
      last_norm = norm;
      m["actor/lr"] = lr;
      ++updates;
    }
  }
  // Actor metrics, over every rank's micro-batches (lr and skipped updates are the same on every
  // rank and are not summed). pg_loss, kl_loss and entropy are each micro-batch's share of its
  // mini-batch's value (loss/policy_objective.h): summed, they give the mini-batches' values, so
  // their mean is per update; the rest are per-micro-batch means, averaged as such.
  Metrics sums;
  for (const auto& [k, v] : m)
    if (k != "actor/lr" && k != "actor/skipped_updates") sums[k] = v;
  sums["micro_batches"] = static_cast<double>(micro_count);
  sums = sum_over_ranks(sums, in.comm);
  const double micro_total = std::max(1.0, sums["micro_batches"]);
  const double update_total = static_cast<double>(std::max<int64_t>(1, updates));
  sums.erase("micro_batches");
  for (const auto& [k, v] : sums) {
    const bool share = k == "actor/pg_loss" || k == "actor/kl_loss" || k == "actor/entropy";
    m[k] = v / (share ? update_total : micro_total);
  }
  // The mean over the updates that ran; with none, the (non-finite) norm of the last one.
  m["actor/grad_norm"] = finite_updates > 0 ? grad_norm_sum / static_cast<double>(finite_updates) : last_norm;
  m["timing_s/sync"] = sync_seconds;  // inside timing_s/update
  return m;
}

}  // namespace fp8rl::trainer
