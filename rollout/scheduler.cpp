#include "rollout/scheduler.h"

#include <algorithm>
#include <utility>

#include "core/util/error.h"
#include "rollout/stop_strings.h"

namespace fp8rl::rollout {

const char* to_string(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kError: return "error";
  }
  return "?";
}

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config), pool_(config.num_blocks, config.block_size, config.enable_prefix_caching) {
  FP8RL_CHECK(config.max_num_seqs > 0, "max_num_seqs must be > 0, got " + std::to_string(config.max_num_seqs));
  FP8RL_CHECK(config.max_num_batched_tokens > 0,
              "max_num_batched_tokens must be > 0, got " + std::to_string(config.max_num_batched_tokens));
  FP8RL_CHECK(config.max_model_len > 0, "max_model_len must be > 0, got " + std::to_string(config.max_model_len));
}

int32_t Scheduler::blocks_for(int64_t tokens) const {
  return static_cast<int32_t>((tokens + config_.block_size - 1) / config_.block_size);
}

BlockHash Scheduler::block_hash(Sequence& s, int32_t i) {
  const int32_t bs = config_.block_size;
  while (static_cast<int32_t>(s.block_hashes.size()) <= i) {
    const auto k = static_cast<int32_t>(s.block_hashes.size());
    FP8RL_CHECK((k + 1) * bs <= static_cast<int32_t>(s.tokens.size()), "hashing a block that is not full");
    const BlockHash parent = k == 0 ? kRootHash : s.block_hashes.back();
    s.block_hashes.push_back(hash_block(parent, std::span<const TokenId>(s.tokens).subspan(size_t(k * bs), size_t(bs))));
  }
  return s.block_hashes[size_t(i)];
}

RequestId Scheduler::fail(RequestId id, std::string why) {
  RequestOutput out;
  out.request_id = id;
  out.finish_reason = FinishReason::kError;
  out.error = std::move(why);
  finished_.push_back(std::move(out));
  ++failed_requests_;
  return id;
}

RequestId Scheduler::reject(const std::string& why) {
  const RequestId id = next_request_++;
  return fail(id, "request " + std::to_string(id) + ": " + why);
}

RequestId Scheduler::add_request(std::vector<TokenId> prompt, const RequestParams& params) {
  const RequestId id = next_request_++;
  const auto p = static_cast<int64_t>(prompt.size());
  const int64_t total = p + params.max_new_tokens;
  const std::string at = "request " + std::to_string(id) + ": ";
  if (prompt.empty()) return fail(id, at + "empty prompt (nothing to condition on)");
  for (const TokenId t : prompt) {
    if (t < 0) return fail(id, at + "negative token id " + std::to_string(t) + " in the prompt");
    if (config_.vocab_size > 0 && t >= config_.vocab_size)
      return fail(id, at + "token id " + std::to_string(t) + " in the prompt is past the model's vocabulary of " +
                          std::to_string(config_.vocab_size));
  }
  if (params.n < 1) return fail(id, at + "n must be >= 1, got " + std::to_string(params.n));
  if (!params.stop_strings.empty() && !config_.token_bytes)
    return fail(id, at + "stop strings need the tokenizer's token bytes (SchedulerConfig::token_bytes)");
  for (const std::string& s : params.stop_strings)
    if (s.empty()) return fail(id, at + "an empty stop string (it would stop every sample at once)");
  if (params.max_new_tokens < 1)
    return fail(id, at + "max_new_tokens must be >= 1, got " + std::to_string(params.max_new_tokens));
  if (total > config_.max_model_len)
    return fail(id, at + "prompt (" + std::to_string(p) + " tokens) + max_new_tokens (" +
                        std::to_string(params.max_new_tokens) + ") = " + std::to_string(total) +
                        " exceeds max_model_len " + std::to_string(config_.max_model_len));
  // A sample's last token is sampled, never computed: its keys and values are total - 1 tokens.
  if (blocks_for(total - 1) > config_.num_blocks) {
    fail(id, at + "one sample needs up to " + std::to_string(blocks_for(total - 1)) + " KV blocks of " +
                 std::to_string(config_.block_size) + " tokens (" + std::to_string(total - 1) +
                 " tokens), the pool has only " + std::to_string(config_.num_blocks));
    finished_.back().kv_tokens_needed = total - 1;
    finished_.back().kv_tokens_in_pool = int64_t{config_.num_blocks} * config_.block_size;
    return id;
  }
  // Without chunked prefill a sequence must be computed in one step, and a preempted one
  // recomputes its prompt and all but its last generated token.
  if (!config_.enable_chunked_prefill && total - 1 > config_.max_num_batched_tokens)
    return fail(id, at + "prompt + max_new_tokens - 1 = " + std::to_string(total - 1) +
                        " tokens may need to be computed in one step (chunked prefill is off), more than "
                        "max_num_batched_tokens " + std::to_string(config_.max_num_batched_tokens));

  Request& r = requests_[id];
  r.params = params;
  for (int32_t i = 0; i < params.n; ++i) {
    const SeqId sid = next_seq_++;
    Sequence& s = seqs_[sid];
    s.id = sid;
    s.request_id = id;
    s.sample_index = i;
    s.num_prompt_tokens = static_cast<int32_t>(p);
    s.tokens = prompt;
    s.steps.arrival = step_;
    r.seqs.push_back(sid);
    waiting_.push_back(sid);
  }
  return id;
}

void Scheduler::schedule_seq(Sequence& s, int32_t num_new, StepPlan& plan) {
  const int32_t bs = config_.block_size;
  const int32_t start = s.num_computed;
  const int32_t end = start + num_new;
  FP8RL_CHECK(num_new > 0 && end <= static_cast<int32_t>(s.tokens.size()), "scheduling past a sequence's tokens");
  FP8RL_CHECK(static_cast<int32_t>(s.block_table.size()) >= blocks_for(end), "scheduling tokens without their blocks");
  for (int32_t pos = start; pos < end; ++pos) {
    plan.input_ids.push_back(s.tokens[size_t(pos)]);
    plan.positions.push_back(pos);
    plan.slot_mapping.push_back(int64_t(s.block_table[size_t(pos / bs)]) * bs + pos % bs);
  }
  // Blocks this step fills up become findable now (the same-step rule in scheduler.h).
  register_blocks(s, end);
  s.num_computed = end;
  s.scheduled_step = step_;
  if (s.steps.first_scheduled < 0) s.steps.first_scheduled = step_;
  ScheduledSeq out;
  out.seq_id = s.id;
  out.request_id = s.request_id;
  out.sample_index = s.sample_index;
  out.num_cached_tokens = start;
  out.num_new_tokens = num_new;
  out.context_len = end;
  out.samples = end == static_cast<int32_t>(s.tokens.size());
  plan.cu_seqlens_q.push_back(plan.cu_seqlens_q.back() + num_new);
  plan.cu_seqlens_k.push_back(plan.cu_seqlens_k.back() + end);
  plan.context_lens.push_back(end);
  plan.max_seqlen_q = std::max<int64_t>(plan.max_seqlen_q, num_new);
  plan.max_seqlen_k = std::max<int64_t>(plan.max_seqlen_k, end);
  if (out.samples) {
    plan.logits_indices.push_back(plan.cu_seqlens_q.back() - 1);
    pending_sampling_.push_back(s.id);
  }
  plan.seqs.push_back(out);
  computed_tokens_ += num_new;
}

// Registers the full blocks among the first `computed_end` tokens whose tokens are all known (a
// pending token's block waits for resolve()).
void Scheduler::register_blocks(Sequence& s, int32_t computed_end) {
  if (!pool_.prefix_caching()) return;
  const int32_t bs = config_.block_size;
  const int32_t known = static_cast<int32_t>(s.tokens.size()) - (s.awaiting ? 1 : 0);
  const int32_t full = std::min(computed_end, known) / bs;
  for (int32_t b = s.num_registered; b < full; ++b) {
    const auto tokens = std::span<const TokenId>(s.tokens).subspan(size_t(b * bs), size_t(bs));
    pool_.register_full_block(s.block_table[size_t(b)], block_hash(s, b), tokens);
  }
  s.num_registered = std::max(s.num_registered, full);
}

void Scheduler::preempt(SeqId id, StepPlan& plan) {
  Sequence& s = seqs_.at(id);
  pool_.free_all(s.block_table);
  s.block_table.clear();
  s.num_computed = 0;
  s.num_registered = 0;
  ++s.num_preemptions;
  ++preemptions_;
  s.running = false;
  running_.erase(std::find(running_.begin(), running_.end(), id));
  waiting_.push_front(id);
  plan.preempted.push_back(id);
}

bool Scheduler::try_admit(Sequence& s, int32_t& budget, StepPlan& plan) {
  const int32_t bs = config_.block_size;
  const auto num_tokens = static_cast<int32_t>(s.tokens.size());
  FP8RL_CHECK(!s.awaiting, "admitting a sequence whose last token is still in flight");
  // Cached full blocks of its prefix. At most num_tokens - 1 tokens can come from the cache: the
  // last token must be computed so the model has its logits to sample from.
  std::vector<BlockId> hits;
  if (pool_.prefix_caching()) {
    for (int32_t b = 0; b < (num_tokens - 1) / bs; ++b) {
      const auto tokens = std::span<const TokenId>(s.tokens).subspan(size_t(b * bs), size_t(bs));
      const auto found = pool_.find_cached(block_hash(s, b), tokens);
      if (!found) break;
      hits.push_back(*found);
    }
  }
  const auto cached = static_cast<int32_t>(hits.size()) * bs;
  const int32_t remaining = num_tokens - cached;
  if (!config_.enable_chunked_prefill && remaining > budget) return false;
  const int32_t num_new = std::min(remaining, budget);
  const int32_t revived = static_cast<int32_t>(
      std::count_if(hits.begin(), hits.end(), [&](BlockId b) { return pool_.ref_count(b) == 0; }));
  const int32_t fresh = blocks_for(cached + num_new) - static_cast<int32_t>(hits.size());
  if (fresh + revived > pool_.num_free_blocks()) return false;
  // Take the hits first: allocate() may otherwise evict one of them.
  for (BlockId b : hits) pool_.acquire_cached(b);
  auto blocks = pool_.allocate(fresh);
  FP8RL_CHECK(blocks.has_value(), "block count checked above");
  s.num_registered = static_cast<int32_t>(hits.size());  // in the cache already
  s.block_table = std::move(hits);
  s.block_table.insert(s.block_table.end(), blocks->begin(), blocks->end());
  s.num_computed = cached;
  tokens_saved_ += cached;
  s.running = true;
  running_.push_back(s.id);
  schedule_seq(s, num_new, plan);
  budget -= num_new;
  return true;
}

StepPlan Scheduler::schedule() {
  FP8RL_CHECK(!pending_, "schedule() called again before update() of step " + std::to_string(step_));
  StepPlan plan;
  plan.step = step_;
  plan.cu_seqlens_q.push_back(0);
  plan.cu_seqlens_k.push_back(0);
  pending_sampling_.clear();
  int32_t budget = config_.max_num_batched_tokens;

  // The youngest running sequence admitted after `self` and not scheduled in this step (-1: none).
  // Only younger ones: a sequence never loses its blocks to a younger one. Not one awaiting its
  // last token: resolve() frees its blocks anyway.
  const auto victim_for = [&](SeqId self) -> SeqId {
    for (auto it = running_.rbegin(); it != running_.rend() && *it != self; ++it) {
      const Sequence& v = seqs_.at(*it);
      if (v.scheduled_step != step_ && !v.awaiting_last) return *it;
    }
    return -1;
  };

  // Passes 1 (decodes) and 2 (running chunked prefills) over the running sequences.
  for (int pass = 0; pass < 2 && budget > 0; ++pass) {
    // A snapshot: preemption edits running_; a victim is skipped below once it no longer runs.
    const std::vector<SeqId> order = running_;
    for (SeqId id : order) {
      if (budget == 0) break;
      Sequence& s = seqs_.at(id);
      if (s.scheduled_step == step_) continue;
      if (!s.running) continue;  // preempted just now
      if (s.awaiting_last) continue;
      const int32_t left = static_cast<int32_t>(s.tokens.size()) - s.num_computed;
      if ((left == 1) != (pass == 0)) continue;
      const int32_t num_new = std::min(left, budget);
      const int32_t need = blocks_for(s.num_computed + num_new) - static_cast<int32_t>(s.block_table.size());
      bool self_preempted = false;
      while (need > pool_.num_free_blocks()) {
        const SeqId victim = victim_for(id);
        if (victim < 0) {
          preempt(id, plan);
          self_preempted = true;
          break;
        }
        preempt(victim, plan);
      }
      if (self_preempted) continue;
      auto blocks = pool_.allocate(need);
      FP8RL_CHECK(blocks.has_value(), "free blocks checked above");
      s.block_table.insert(s.block_table.end(), blocks->begin(), blocks->end());
      schedule_seq(s, num_new, plan);
      budget -= num_new;
    }
  }

  // Pass 3: admit waiting sequences, front first.
  if (plan.preempted.empty()) {
    while (!waiting_.empty() && budget > 0 && static_cast<int32_t>(running_.size()) < config_.max_num_seqs) {
      Sequence& s = seqs_.at(waiting_.front());
      if (!try_admit(s, budget, plan)) break;
      waiting_.pop_front();
    }
  }

  // Block tables, padded to the longest.
  for (const auto& sc : plan.seqs)
    plan.max_blocks_per_seq = std::max(plan.max_blocks_per_seq, static_cast<int32_t>(seqs_.at(sc.seq_id).block_table.size()));
  plan.block_tables.assign(plan.seqs.size() * size_t(plan.max_blocks_per_seq), kPadBlock);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const auto& table = seqs_.at(plan.seqs[i].seq_id).block_table;
    std::copy(table.begin(), table.end(), plan.block_tables.begin() + std::ptrdiff_t(i * size_t(plan.max_blocks_per_seq)));
  }
  // An empty plan is no step: nothing to launch or update, and the step number stays.
  pending_ = !plan.empty();
  return plan;
}

void Scheduler::finish(Sequence& s, FinishReason r, int64_t step) {
  s.finish_reason = r;
  s.steps.finished = step;
  pool_.free_all(s.block_table);
  s.block_table.clear();
  if (s.running)
    running_.erase(std::find(running_.begin(), running_.end(), s.id));
  else  // preempted while its last sampled token was in flight
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), s.id));
  s.running = false;
  Request& req = requests_.at(s.request_id);
  if (++req.num_finished < static_cast<int32_t>(req.seqs.size())) return;
  RequestOutput out;
  out.request_id = s.request_id;
  for (SeqId sid : req.seqs) {
    Sequence& q = seqs_.at(sid);
    SampleOutput so;
    so.tokens.assign(q.tokens.begin() + q.num_prompt_tokens, q.tokens.end());
    so.logprobs = std::move(q.logprobs);
    so.finish_reason = q.finish_reason;
    so.num_preemptions = q.num_preemptions;
    so.steps = q.steps;
    out.samples.push_back(std::move(so));
    seqs_.erase(sid);
  }
  requests_.erase(out.request_id);  // not s.request_id: `s` was erased with its siblings above
  finished_.push_back(std::move(out));
  ++finished_requests_;
}

void Scheduler::check_sampled(std::span<const SampledToken> sampled, std::span<const SeqId> expected,
                              int64_t step) const {
  FP8RL_CHECK(sampled.size() == expected.size(), "step " + std::to_string(step) + " expects " +
                                                     std::to_string(expected.size()) + " sampled tokens, got " +
                                                     std::to_string(sampled.size()));
  for (size_t i = 0; i < sampled.size(); ++i) {
    FP8RL_CHECK(sampled[i].seq_id == expected[i],
                "sampled token " + std::to_string(i) + " is for sequence " + std::to_string(sampled[i].seq_id) +
                    ", the plan samples sequence " + std::to_string(expected[i]) + " there");
    FP8RL_CHECK(sampled[i].token >= 0, "a sampled token id must be >= 0, got " + std::to_string(sampled[i].token));
  }
}

void Scheduler::update(std::span<const SampledToken> sampled) {
  FP8RL_CHECK(pending_, "update() without a scheduled step");
  FP8RL_CHECK(!in_flight_, "update() with step " + std::to_string(step_ - 1) + " in flight: resolve() it");
  check_sampled(sampled, pending_sampling_, step_);  // before any state changes
  advance();
  resolve(sampled);
}

void Scheduler::advance() {
  FP8RL_CHECK(pending_, "advance() without a scheduled step");
  FP8RL_CHECK(!in_flight_, "advance() with step " + std::to_string(in_flight_ ? in_flight_->step : 0) +
                               " still in flight: resolve() it first");
  InFlight f;
  f.step = step_;
  f.sampling = std::move(pending_sampling_);
  f.placed.assign(f.sampling.size(), 0);
  for (size_t i = 0; i < f.sampling.size(); ++i) {
    const auto it = seqs_.find(f.sampling[i]);
    // A sequence that finished since schedule() (resolve() of the step before) gets no token.
    if (it == seqs_.end() || it->second.finish_reason != FinishReason::kNone) continue;
    Sequence& s = it->second;
    FP8RL_CHECK(!s.awaiting, "a sequence with two tokens in flight");
    s.tokens.push_back(kPendingToken);
    s.logprobs.push_back(0.0f);
    s.awaiting = true;
    const RequestParams& p = requests_.at(s.request_id).params;
    const auto generated = static_cast<int32_t>(s.tokens.size()) - s.num_prompt_tokens;
    s.awaiting_last = generated >= p.max_new_tokens || static_cast<int32_t>(s.tokens.size()) >= config_.max_model_len;
    f.placed[i] = 1;
  }
  in_flight_ = std::move(f);
  pending_sampling_.clear();
  pending_ = false;
  ++step_;
}

void Scheduler::resolve(std::span<const SampledToken> sampled) {
  FP8RL_CHECK(in_flight_, "resolve() without a step in flight");
  check_sampled(sampled, in_flight_->sampling, in_flight_->step);
  const InFlight f = std::move(*in_flight_);
  in_flight_.reset();
  for (size_t i = 0; i < sampled.size(); ++i) {
    if (!f.placed[i]) continue;  // finished meanwhile: this token is past its end
    const SampledToken& t = sampled[i];
    Sequence& s = seqs_.at(t.seq_id);  // unfinished until now, so not erased
    FP8RL_CHECK(s.awaiting && s.tokens.back() == kPendingToken, "resolving a sequence with no pending token");
    s.tokens.back() = t.token;
    s.logprobs.back() = t.logprob;
    s.awaiting = false;
    if (s.steps.first_token < 0) s.steps.first_token = f.step;
    if (s.running) register_blocks(s, s.num_computed);  // a block this token completed, if computed already
    const RequestParams& p = requests_.at(s.request_id).params;
    const bool stop_string =
        !p.stop_strings.empty() &&
        append_and_match_stop(s.stop_window,
                              static_cast<size_t>(t.token) < config_.token_bytes->size()
                                  ? std::string_view((*config_.token_bytes)[static_cast<size_t>(t.token)])
                                  : std::string_view(),
                              p.stop_strings);
    if (stop_string || std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), t.token) != p.stop_token_ids.end())
      finish(s, FinishReason::kStop, f.step);
    else if (s.awaiting_last)
      finish(s, FinishReason::kLength, f.step);
  }
}

std::vector<RequestOutput> Scheduler::take_finished() { return std::exchange(finished_, {}); }

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.steps = step_;
  s.preemptions = preemptions_;
  s.computed_tokens = computed_tokens_;
  s.prefill_tokens_saved = tokens_saved_;
  s.finished_requests = finished_requests_;
  s.failed_requests = failed_requests_;
  s.pool = pool_.stats();
  return s;
}

}  // namespace fp8rl::rollout
