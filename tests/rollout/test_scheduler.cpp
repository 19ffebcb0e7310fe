// The scheduler, driven by a fake model that keeps a fake KV cache: each step it writes every new
// token (id and position) to its slot_mapping slot, then "attends" by reading each sampling
// sequence's whole context back through its block table, and picks the next token as a hash of
// what it read (and the sample index). So a wrong slot, a wrong block table, a shared block
// overwritten, a block freed too early or a lost token all change the generated tokens, and every
// request is compared with its tokens computed directly from its prompt (as if run alone).
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "rollout/scheduler.h"
#include "tests/catch.h"

using namespace fp8rl::rollout;

namespace {

constexpr TokenId kVocab = 61;  // prime: token hashes spread evenly
constexpr TokenId kStop = 0;    // ~1 in 61 generated tokens stops a sequence (when asked to)

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
uint64_t fold(uint64_t h, TokenId t) { return mix(h ^ static_cast<uint32_t>(t)); }
TokenId next_token(uint64_t context_hash, int32_t sample_index) {
  return static_cast<TokenId>(mix(context_hash + 0x51ULL * static_cast<uint64_t>(sample_index + 1)) % kVocab);
}

// The tokens one sample generates when run alone: no cache, no scheduler.
std::vector<TokenId> reference(const std::vector<TokenId>& prompt, const RequestParams& p, int32_t sample,
                               FinishReason* why = nullptr) {
  uint64_t h = 0;
  for (TokenId t : prompt) h = fold(h, t);
  std::vector<TokenId> out;
  while (true) {
    const TokenId t = next_token(h, sample);
    out.push_back(t);
    h = fold(h, t);
    if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), t) != p.stop_token_ids.end()) {
      if (why) *why = FinishReason::kStop;
      break;
    }
    if (static_cast<int32_t>(out.size()) >= p.max_new_tokens) {
      if (why) *why = FinishReason::kLength;
      break;
    }
  }
  return out;
}

// Checks a plan against itself and the config: layout, positions, slots, block tables, budget.
// Returns an empty string or the first inconsistency.
std::string plan_problem(const StepPlan& plan, const SchedulerConfig& c) {
  const auto s_count = plan.seqs.size();
  const int32_t bs = c.block_size;
  if (plan.cu_seqlens_q.size() != s_count + 1 || plan.cu_seqlens_k.size() != s_count + 1) return "cu_seqlens size";
  if (plan.context_lens.size() != s_count) return "context_lens size";
  if (plan.block_tables.size() != s_count * size_t(plan.max_blocks_per_seq)) return "block_tables size";
  const auto n = size_t(plan.num_tokens());
  if (plan.input_ids.size() != n || plan.positions.size() != n || plan.slot_mapping.size() != n) return "token arrays size";
  if (plan.num_tokens() > c.max_num_batched_tokens) return "over the token budget";
  if (plan.cu_seqlens_q[0] != 0 || plan.cu_seqlens_k[0] != 0) return "cu_seqlens[0] != 0";
  std::set<int64_t> slots;
  std::set<SeqId> ids;
  size_t sampling = 0;
  int64_t max_q = 0, max_k = 0;
  for (size_t s = 0; s < s_count; ++s) {
    const ScheduledSeq& sc = plan.seqs[s];
    if (!ids.insert(sc.seq_id).second) return "a sequence scheduled twice";
    const int64_t q0 = plan.cu_seqlens_q[s], q1 = plan.cu_seqlens_q[s + 1];
    if (q1 - q0 != sc.num_new_tokens || sc.num_new_tokens <= 0) return "cu_seqlens_q != num_new_tokens";
    if (sc.context_len != sc.num_cached_tokens + sc.num_new_tokens) return "context_len";
    if (plan.context_lens[s] != sc.context_len) return "context_lens";
    if (plan.cu_seqlens_k[s + 1] - plan.cu_seqlens_k[s] != sc.context_len) return "cu_seqlens_k";
    max_q = std::max<int64_t>(max_q, sc.num_new_tokens);
    max_k = std::max<int64_t>(max_k, sc.context_len);
    const int32_t* row = plan.block_tables.data() + s * size_t(plan.max_blocks_per_seq);
    const int32_t used = (sc.context_len + bs - 1) / bs;
    if (used > plan.max_blocks_per_seq) return "block table shorter than the context";
    std::set<int32_t> own;
    for (int32_t b = 0; b < used; ++b) {
      if (row[b] < 0 || row[b] >= c.num_blocks) return "block id out of range";
      if (!own.insert(row[b]).second) return "a block twice in one table";
    }
    for (int64_t i = q0; i < q1; ++i) {
      const int64_t pos = sc.num_cached_tokens + (i - q0);  // the new tokens are the last ones
      if (plan.positions[size_t(i)] != pos) return "position != context position";
      const int64_t slot = plan.slot_mapping[size_t(i)];
      if (slot != int64_t(row[pos / bs]) * bs + pos % bs) return "slot not at its position in its own block table";
      if (!slots.insert(slot).second) return "two new tokens write one slot";
    }
    if (sc.samples) {
      if (sampling >= plan.logits_indices.size() || plan.logits_indices[sampling] != q1 - 1) return "logits_indices";
      ++sampling;
    }
  }
  if (sampling != plan.logits_indices.size()) return "logits_indices count";
  if (max_q != plan.max_seqlen_q || max_k != plan.max_seqlen_k) return "max_seqlen";
  return {};
}

// The fake model with its fake KV cache (token, position per slot).
struct FakeModel {
  SchedulerConfig c;
  std::vector<std::pair<TokenId, int64_t>> kv;
  int64_t read_errors = 0;
  explicit FakeModel(const SchedulerConfig& cfg)
      : c(cfg), kv(size_t(cfg.num_blocks) * size_t(cfg.block_size), {-1, -1}) {}

  std::vector<SampledToken> run(const StepPlan& plan) {
    // Write every new token first, then read (the write-before-read contract of scheduler.h).
    for (size_t i = 0; i < plan.input_ids.size(); ++i)
      kv[size_t(plan.slot_mapping[i])] = {plan.input_ids[i], plan.positions[i]};
    std::vector<SampledToken> out;
    const int32_t bs = c.block_size;
    for (size_t s = 0; s < plan.seqs.size(); ++s) {
      const ScheduledSeq& sc = plan.seqs[s];
      if (!sc.samples) continue;
      const int32_t* row = plan.block_tables.data() + s * size_t(plan.max_blocks_per_seq);
      uint64_t h = 0;
      for (int32_t p = 0; p < sc.context_len; ++p) {
        const auto& e = kv[size_t(row[p / bs]) * size_t(bs) + size_t(p % bs)];
        if (e.second != p) ++read_errors;
        h = fold(h, e.first);
      }
      out.push_back({sc.seq_id, next_token(h, sc.sample_index), -0.5f * static_cast<float>(sc.context_len)});
    }
    return out;
  }
};

struct Job {
  std::vector<TokenId> prompt;
  RequestParams params;
};

struct RunResult {
  std::map<RequestId, RequestOutput> outputs;
  SchedulerStats stats;
  int64_t steps = 0;
  int64_t read_errors = 0;
  int32_t max_running = 0;
  int64_t patched = 0;  // async: input tokens taken from the step in flight
  std::string problem;  // first plan inconsistency, if any
};

// Async scheduling's input patch, as the engine does it on the device: every kPendingToken input
// becomes the token the step in flight sampled for that sequence (always its last new token).
int64_t patch_pending(StepPlan& plan, const std::vector<SampledToken>* in_flight) {
  int64_t patched = 0;
  for (size_t s = 0; s < plan.seqs.size(); ++s)
    for (int64_t i = plan.cu_seqlens_q[s]; i < plan.cu_seqlens_q[s + 1]; ++i) {
      if (plan.input_ids[size_t(i)] != kPendingToken) continue;
      REQUIRE(in_flight != nullptr);
      REQUIRE(i == plan.cu_seqlens_q[s + 1] - 1);
      const auto it = std::find_if(in_flight->begin(), in_flight->end(),
                                   [&](const SampledToken& t) { return t.seq_id == plan.seqs[s].seq_id; });
      REQUIRE(it != in_flight->end());
      plan.input_ids[size_t(i)] = it->token;
      ++patched;
    }
  return patched;
}

// Adds all jobs (or `arrive_every` per step, to mix arrivals with running work), runs to the end.
// async: one step in flight (schedule, run, resolve the previous step, advance), as the engine's
// async scheduling drives it.
RunResult drive(const SchedulerConfig& c, const std::vector<Job>& jobs, int32_t arrive_per_step = 0,
                bool async = false) {
  Scheduler sched(c);
  FakeModel model(c);
  RunResult r;
  size_t next = 0;
  const auto arrive = [&](size_t k) {
    for (; next < jobs.size() && k > 0; ++next, --k) {
      const RequestId id = sched.add_request(jobs[next].prompt, jobs[next].params);
      REQUIRE(id == static_cast<RequestId>(next));
    }
  };
  arrive(arrive_per_step > 0 ? size_t(arrive_per_step) : jobs.size());
  std::optional<std::vector<SampledToken>> in_flight;
  while (sched.has_unfinished() || next < jobs.size()) {
    StepPlan plan = sched.schedule();
    // Never stuck: with a step in flight a plan may be empty while that step holds the tokens
    // that finish the running sequences.
    if (sched.has_unfinished() && plan.empty()) REQUIRE((async && in_flight && !in_flight->empty()));
    if (r.problem.empty()) r.problem = plan_problem(plan, c);
    r.max_running = std::max(r.max_running, static_cast<int32_t>(sched.num_running()));
    if (plan.empty()) {  // no step: wait for the one in flight (or for arrivals)
      if (in_flight) sched.resolve(*in_flight);
      in_flight.reset();
    } else if (async) {
      r.patched += patch_pending(plan, in_flight ? &*in_flight : nullptr);
      std::vector<SampledToken> out = model.run(plan);
      if (in_flight) sched.resolve(*in_flight);
      sched.advance();
      in_flight = std::move(out);
    } else {
      sched.update(model.run(plan));
    }
    for (auto& o : sched.take_finished()) r.outputs[o.request_id] = std::move(o);
    if (arrive_per_step > 0) arrive(size_t(arrive_per_step));
    REQUIRE(++r.steps < 1000000);
  }
  if (in_flight) {  // the last step: every token it sampled is past a finished sequence's end
    sched.resolve(*in_flight);
    REQUIRE_FALSE(sched.has_in_flight());
  }
  for (auto& o : sched.take_finished()) r.outputs[o.request_id] = std::move(o);
  sched.block_pool().check_invariants();
  REQUIRE(sched.block_pool().num_free_blocks() == c.num_blocks);  // no leaks
  r.stats = sched.stats();
  r.read_errors = model.read_errors;
  return r;
}

// Every request's samples equal their run-alone tokens.
void require_matches_reference(const std::vector<Job>& jobs, const RunResult& r) {
  REQUIRE(r.problem.empty());
  REQUIRE(r.read_errors == 0);
  REQUIRE(r.outputs.size() == jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    const RequestOutput& o = r.outputs.at(static_cast<RequestId>(i));
    INFO("request " << i << ": " << o.error);
    REQUIRE(o.finish_reason == FinishReason::kNone);
    REQUIRE(o.samples.size() == size_t(jobs[i].params.n));
    for (int32_t s = 0; s < jobs[i].params.n; ++s) {
      FinishReason why = FinishReason::kNone;
      const auto want = reference(jobs[i].prompt, jobs[i].params, s, &why);
      REQUIRE(o.samples[size_t(s)].tokens == want);
      REQUIRE(o.samples[size_t(s)].finish_reason == why);
      REQUIRE(o.samples[size_t(s)].logprobs.size() == want.size());
    }
  }
}

std::vector<TokenId> random_prompt(std::mt19937& rng, int32_t len) {
  std::vector<TokenId> p(static_cast<size_t>(len));
  for (auto& t : p) t = 1 + static_cast<TokenId>(rng() % (kVocab - 1));  // never the stop token
  return p;
}

std::vector<Job> random_jobs(uint32_t seed, int count, int32_t max_prompt, int32_t max_new) {
  std::mt19937 rng(seed);
  std::vector<Job> jobs;
  for (int i = 0; i < count; ++i) {
    Job j;
    j.prompt = random_prompt(rng, 1 + static_cast<int32_t>(rng() % uint32_t(max_prompt)));
    const int32_t ns[] = {1, 1, 2, 3, 4};
    j.params.n = ns[rng() % 5];
    j.params.max_new_tokens = 1 + static_cast<int32_t>(rng() % uint32_t(max_new));
    if (rng() % 2) j.params.stop_token_ids = {kStop};
    jobs.push_back(std::move(j));
  }
  return jobs;
}

SchedulerConfig small_config() {
  SchedulerConfig c;
  c.num_blocks = 37;
  c.block_size = 7;
  c.max_num_seqs = 13;
  c.max_num_batched_tokens = 53;
  c.max_model_len = 200;
  return c;
}

}  // namespace

TEST_CASE("scheduler: one request's first plans spell out slots, block tables and cu_seqlens", "[rollout][scheduler]") {
  SchedulerConfig c;
  c.num_blocks = 6;
  c.block_size = 4;
  c.max_num_batched_tokens = 100;
  c.max_model_len = 64;
  Scheduler sched(c);
  RequestParams p;
  p.max_new_tokens = 3;
  sched.add_request({11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, p);  // 10 tokens: 2 full blocks + 2
  StepPlan plan = sched.schedule();
  REQUIRE(plan_problem(plan, c).empty());
  REQUIRE(plan.seqs.size() == 1);
  REQUIRE(plan.seqs[0].num_cached_tokens == 0);
  REQUIRE(plan.seqs[0].num_new_tokens == 10);
  REQUIRE(plan.seqs[0].samples);
  REQUIRE(plan.cu_seqlens_q == std::vector<int64_t>{0, 10});
  REQUIRE(plan.cu_seqlens_k == std::vector<int64_t>{0, 10});
  REQUIRE(plan.context_lens == std::vector<int32_t>{10});
  REQUIRE(plan.max_blocks_per_seq == 3);
  // Fresh blocks come out in id order: 0, 1, 2.
  REQUIRE(plan.block_tables == std::vector<int32_t>{0, 1, 2});
  REQUIRE(plan.slot_mapping == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  REQUIRE(plan.positions == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  REQUIRE(plan.logits_indices == std::vector<int64_t>{9});
  REQUIRE(sched.block_pool().stats().num_cached == 2);  // the two full blocks
  const SeqId sid = plan.seqs[0].seq_id;
  sched.update(std::vector<SampledToken>{{sid, 30, -1.0f}});
  // Decode: one token at position 10, slot 2*4+2.
  plan = sched.schedule();
  REQUIRE(plan_problem(plan, c).empty());
  REQUIRE(plan.input_ids == std::vector<TokenId>{30});
  REQUIRE(plan.positions == std::vector<int64_t>{10});
  REQUIRE(plan.slot_mapping == std::vector<int64_t>{10});
  REQUIRE(plan.context_lens == std::vector<int32_t>{11});
  REQUIRE(plan.cu_seqlens_k == std::vector<int64_t>{0, 11});
  sched.update(std::vector<SampledToken>{{sid, 31, -2.0f}});
  plan = sched.schedule();  // position 11 fills block 2
  REQUIRE(plan.slot_mapping == std::vector<int64_t>{11});
  sched.update(std::vector<SampledToken>{{sid, 32, -3.0f}});
  REQUIRE_FALSE(sched.has_unfinished());
  auto done = sched.take_finished();
  REQUIRE(done.size() == 1);
  REQUIRE(done[0].samples[0].tokens == std::vector<TokenId>{30, 31, 32});
  REQUIRE(done[0].samples[0].logprobs == std::vector<float>{-1.0f, -2.0f, -3.0f});
  REQUIRE(done[0].samples[0].finish_reason == FinishReason::kLength);
  const SampleSteps& st = done[0].samples[0].steps;
  REQUIRE(st.arrival == 0);
  REQUIRE(st.first_scheduled == 0);
  REQUIRE(st.first_token == 0);
  REQUIRE(st.finished == 2);
  REQUIRE(sched.block_pool().num_free_blocks() == 6);
}

TEST_CASE("scheduler: n samples share the prompt's full blocks, (n-1) x blocks x block_size tokens saved",
          "[rollout][scheduler]") {
  // The last prompt token is always computed (its logits are sampled), so the shared blocks are
  // the full blocks before it: (P - 1) / block_size of them. P = 37, block 5: 7 blocks; P = 35
  // (a multiple of 5): 6, the 7th holds the last token and is each sample's own.
  for (int32_t prompt_len : {37, 35, 4}) {
    SchedulerConfig c;
    c.num_blocks = 64;
    c.block_size = 5;
    c.max_num_batched_tokens = 512;
    c.max_model_len = 100;
    const int32_t n = 4;
    std::mt19937 rng(7);
    std::vector<Job> jobs{{random_prompt(rng, prompt_len), RequestParams{n, 9, {}}}};
    const RunResult r = drive(c, jobs);
    require_matches_reference(jobs, r);
    const int64_t shared_blocks = (prompt_len - 1) / c.block_size;
    INFO("prompt_len " << prompt_len);
    REQUIRE(r.stats.prefill_tokens_saved == (n - 1) * shared_blocks * c.block_size);
    REQUIRE(r.stats.pool.prefix_hits == (n - 1) * shared_blocks);
    REQUIRE(r.stats.pool.prefill_tokens_saved == r.stats.prefill_tokens_saved);
    // Computed: the prompt once, the rest of it n - 1 times, and the generated tokens.
    REQUIRE(r.stats.computed_tokens == prompt_len + (n - 1) * (prompt_len - shared_blocks * c.block_size) + n * (9 - 1));
    REQUIRE(r.stats.preemptions == 0);

    c.enable_prefix_caching = false;
    const RunResult off = drive(c, jobs);
    require_matches_reference(jobs, off);
    REQUIRE(off.stats.prefill_tokens_saved == 0);
    REQUIRE(off.stats.computed_tokens == n * prompt_len + n * (9 - 1));
  }
}

TEST_CASE("scheduler: the samples of one prompt share blocks in their block tables", "[rollout][scheduler]") {
  SchedulerConfig c;
  c.num_blocks = 20;
  c.block_size = 3;
  c.max_num_batched_tokens = 100;
  c.max_model_len = 40;
  Scheduler sched(c);
  sched.add_request({1, 2, 3, 4, 5, 6, 7, 8}, RequestParams{3, 4, {}});  // 8 tokens: blocks [0,3) [3,6) shared
  const StepPlan plan = sched.schedule();
  REQUIRE(plan_problem(plan, c).empty());
  REQUIRE(plan.seqs.size() == 3);
  REQUIRE(plan.seqs[0].num_new_tokens == 8);
  for (size_t s = 1; s < 3; ++s) {
    REQUIRE(plan.seqs[s].num_cached_tokens == 6);
    REQUIRE(plan.seqs[s].num_new_tokens == 2);
    const int32_t* row = plan.block_tables.data() + s * size_t(plan.max_blocks_per_seq);
    REQUIRE(row[0] == plan.block_tables[0]);
    REQUIRE(row[1] == plan.block_tables[1]);
    REQUIRE(row[2] != plan.block_tables[2]);  // the partial tail block is private
  }
  REQUIRE(sched.block_pool().ref_count(plan.block_tables[0]) == 3);
  REQUIRE(sched.block_pool().ref_count(plan.block_tables[2]) == 1);
}

TEST_CASE("scheduler: stop and length finish reasons, sequences leave mid-batch", "[rollout][scheduler]") {
  SchedulerConfig c = small_config();
  std::mt19937 rng(3);
  std::vector<Job> jobs;
  for (int i = 0; i < 40; ++i) jobs.push_back({random_prompt(rng, 3 + i % 11), RequestParams{1, 1 + (i * 7) % 40, {kStop}}});
  const RunResult r = drive(c, jobs);
  require_matches_reference(jobs, r);
  int stops = 0, lengths = 0;
  for (const auto& [id, o] : r.outputs) {
    for (const auto& s : o.samples) {
      if (s.finish_reason == FinishReason::kStop) {
        ++stops;
        REQUIRE(s.tokens.back() == kStop);  // the stop token is kept (the policy learns to emit it)
      } else {
        ++lengths;
      }
    }
  }
  REQUIRE(stops > 0);
  REQUIRE(lengths > 0);
  REQUIRE(std::string(to_string(FinishReason::kStop)) == "stop");
  REQUIRE(std::string(to_string(FinishReason::kLength)) == "length");
}

// A sample's last token is sampled, never computed, so it never takes a KV slot: a request whose
// prompt + max_new_tokens - 1 tokens fill the pool exactly runs (it was refused, one block short).
TEST_CASE("scheduler: a request whose cached tokens fill the pool exactly runs to its length", "[rollout][scheduler]") {
  SchedulerConfig c;
  c.num_blocks = 1;
  c.block_size = 16;
  c.max_num_seqs = 1;
  c.max_num_batched_tokens = 64;
  c.max_model_len = 64;
  std::mt19937 rng(9);
  const std::vector<Job> jobs{Job{random_prompt(rng, 10), RequestParams{1, 7, {}}}};  // 16 cached tokens
  const RunResult r = drive(c, jobs);
  require_matches_reference(jobs, r);
  REQUIRE(r.outputs.at(0).samples.at(0).tokens.size() == 7);
  // One more token is one more block than the pool has.
  Scheduler sched(c);
  sched.add_request(random_prompt(rng, 10), RequestParams{1, 8, {}});
  const std::vector<RequestOutput> failed = sched.take_finished();
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].error.find("needs up to 2 KV blocks of 16 tokens (17 tokens), the pool has only 1") != std::string::npos);
  CHECK(failed[0].kv_tokens_needed == 17);  // marked as a memory shortage, for the trainer's message
  CHECK(failed[0].kv_tokens_in_pool == 16);
  // A refusal for anything else carries no KV counts; nor does a request refused by its caller.
  sched.add_request({}, RequestParams{1, 8, {}});
  const RequestId rejected = sched.reject("sampling: top_p must be in (0, 1], got 0");
  const std::vector<RequestOutput> others = sched.take_finished();
  REQUIRE(others.size() == 2);
  for (const RequestOutput& o : others) {
    CHECK(o.finish_reason == FinishReason::kError);
    CHECK(o.kv_tokens_needed == 0);
  }
  CHECK(others[1].request_id == rejected);
  CHECK(others[1].error == "request " + std::to_string(rejected) + ": sampling: top_p must be in (0, 1], got 0");
}

TEST_CASE("scheduler: requests that can never run fail alone with a reason, the others complete",
          "[rollout][scheduler]") {
  SchedulerConfig c = small_config();  // 37 blocks of 7 = 259 tokens, max_model_len 200
  c.max_model_len = 300;
  std::mt19937 rng(5);
  std::vector<Job> jobs = random_jobs(11, 30, 40, 30);
  // Bad ones in between the good ones.
  std::map<size_t, std::string> bad;
  jobs.insert(jobs.begin() + 3, Job{random_prompt(rng, 250), RequestParams{1, 51, {}}});  // 301 > max_model_len
  bad[3] = "exceeds max_model_len 300";
  jobs.insert(jobs.begin() + 10, Job{random_prompt(rng, 255), RequestParams{2, 6, {}}});  // 260 cached tokens: 38 blocks > 37
  bad[10] = "the pool has only 37";
  jobs.insert(jobs.begin() + 17, Job{{}, RequestParams{}});
  bad[17] = "empty prompt";
  jobs.insert(jobs.begin() + 20, Job{random_prompt(rng, 5), RequestParams{0, 5, {}}});
  bad[20] = "n must be >= 1";
  jobs.insert(jobs.begin() + 21, Job{random_prompt(rng, 5), RequestParams{1, 0, {}}});
  bad[21] = "max_new_tokens must be >= 1";
  jobs.insert(jobs.begin() + 22, Job{{5, -1, 7}, RequestParams{1, 5, {}}});
  bad[22] = "negative token id -1 in the prompt";
  c.vocab_size = kVocab;
  jobs.insert(jobs.begin() + 23, Job{{5, kVocab, 7}, RequestParams{1, 5, {}}});
  bad[23] = "token id 61 in the prompt is past the model's vocabulary of 61";

  Scheduler sched(c);
  FakeModel model(c);
  for (const Job& j : jobs) sched.add_request(j.prompt, j.params);
  std::map<RequestId, RequestOutput> outs;
  while (sched.has_unfinished()) {
    StepPlan plan = sched.schedule();
    REQUIRE(plan_problem(plan, c).empty());
    sched.update(model.run(plan));
    for (auto& o : sched.take_finished()) outs[o.request_id] = std::move(o);
  }
  for (auto& o : sched.take_finished()) outs[o.request_id] = std::move(o);
  REQUIRE(outs.size() == jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    const RequestOutput& o = outs.at(RequestId(i));
    if (bad.count(i)) {
      INFO(o.error);
      REQUIRE(o.finish_reason == FinishReason::kError);
      REQUIRE(o.samples.empty());
      REQUIRE(o.error.find("request " + std::to_string(i) + ": ") == 0);
      REQUIRE(o.error.find(bad[i]) != std::string::npos);
    } else {
      REQUIRE(o.finish_reason == FinishReason::kNone);
      for (int32_t s = 0; s < jobs[i].params.n; ++s)
        REQUIRE(o.samples[size_t(s)].tokens == reference(jobs[i].prompt, jobs[i].params, s));
    }
  }
  REQUIRE(sched.stats().failed_requests == 7);
  REQUIRE(sched.block_pool().num_free_blocks() == c.num_blocks);

  // Chunked prefill off: a request that might have to recompute more than one step's budget fails.
  SchedulerConfig nc = small_config();
  nc.enable_chunked_prefill = false;
  Scheduler s2(nc);
  s2.add_request(random_prompt(rng, 50), RequestParams{1, 5, {}});  // 54 > 53
  s2.add_request(random_prompt(rng, 40), RequestParams{1, 5, {}});
  auto f = s2.take_finished();
  REQUIRE(f.size() == 1);
  REQUIRE(f[0].request_id == 0);
  REQUIRE(f[0].error.find("chunked prefill is off") != std::string::npos);
  REQUIRE(s2.num_waiting() == 1);
}

TEST_CASE("scheduler: stress, a pool too small for all forces preemption, every request gets its run-alone tokens",
          "[rollout][scheduler]") {
  const std::vector<Job> jobs = random_jobs(2024, 300, 90, 60);
  // The reference is what a request gets when it runs alone through the scheduler.
  for (size_t i = 0; i < 12; ++i) {
    const RunResult alone = drive(small_config(), {jobs[i]});
    REQUIRE(alone.stats.preemptions == 0);
    for (int32_t s = 0; s < jobs[i].params.n; ++s)
      REQUIRE(alone.outputs.at(0).samples[size_t(s)].tokens == reference(jobs[i].prompt, jobs[i].params, s));
  }
  // A: 259 token slots for up to 13 sequences of up to 150 tokens, all requests queued at once.
  // B: big blocks (17 x 16), many sequences, one request arriving per step.
  SchedulerConfig b = small_config();
  b.num_blocks = 17;
  b.block_size = 16;
  b.max_num_seqs = 64;
  b.max_num_batched_tokens = 97;
  for (const bool async : {false, true})
  for (const auto& [c, arrive] : {std::pair{small_config(), 0}, std::pair{b, 1}}) {
    INFO("block_size " << c.block_size << ", arrive per step " << arrive << ", async " << async);
    const RunResult r = drive(c, jobs, arrive, async);
    require_matches_reference(jobs, r);
    if (async) REQUIRE(r.patched > 0);
    REQUIRE(r.stats.preemptions > 0);
    REQUIRE(r.stats.finished_requests == 300);
    REQUIRE(r.max_running <= c.max_num_seqs);
    REQUIRE(r.stats.prefill_tokens_saved > 0);
    REQUIRE(r.stats.pool.num_used == 0);
  }
}

TEST_CASE("scheduler: a request that needs the whole pool completes among others", "[rollout][scheduler]") {
  SchedulerConfig c = small_config();
  c.num_blocks = 12;  // 84 slots
  c.max_model_len = 84;
  std::vector<Job> jobs = random_jobs(99, 20, 30, 20);
  std::mt19937 rng(1);
  jobs.insert(jobs.begin() + 5, Job{random_prompt(rng, 60), RequestParams{2, 24, {}}});  // 84 tokens: all 12 blocks
  const RunResult r = drive(c, jobs);
  require_matches_reference(jobs, r);
  REQUIRE(r.stats.preemptions > 0);
}

TEST_CASE("scheduler: chunked prefill and prefix caching on or off give identical outputs", "[rollout][scheduler]") {
  const std::vector<Job> jobs = random_jobs(77, 120, 45, 40);
  std::vector<std::map<RequestId, RequestOutput>> all;
  for (bool chunked : {true, false}) {
    for (bool prefix : {true, false}) {
      for (int32_t budget : {17, 131}) {
        SchedulerConfig c = small_config();
        c.enable_chunked_prefill = chunked;
        c.enable_prefix_caching = prefix;
        c.max_num_batched_tokens = chunked ? budget : 131;  // off: a whole recompute must fit
        const bool async = budget == 17;  // the async protocol on half the variants
        INFO("chunked " << chunked << " prefix " << prefix << " budget " << c.max_num_batched_tokens << " async " << async);
        const RunResult r = drive(c, jobs, 0, async);
        require_matches_reference(jobs, r);
        if (!prefix) REQUIRE(r.stats.prefill_tokens_saved == 0);
        if (prefix) REQUIRE(r.stats.prefill_tokens_saved > 0);
        all.push_back(r.outputs);
      }
    }
  }
  for (size_t k = 1; k < all.size(); ++k)
    for (const auto& [id, o] : all[0]) {
      REQUIRE(all[k].at(id).samples.size() == o.samples.size());
      for (size_t s = 0; s < o.samples.size(); ++s) REQUIRE(all[k].at(id).samples[s].tokens == o.samples[s].tokens);
    }
}

TEST_CASE("scheduler: a long prompt is chunked under the budget while decodes keep going", "[rollout][scheduler]") {
  SchedulerConfig c;
  c.num_blocks = 64;
  c.block_size = 6;
  c.max_num_batched_tokens = 10;
  c.max_model_len = 200;
  Scheduler sched(c);
  FakeModel model(c);
  std::mt19937 rng(4);
  sched.add_request(random_prompt(rng, 3), RequestParams{2, 30, {}});  // two decoding samples
  sched.update(model.run(sched.schedule()));
  sched.add_request(random_prompt(rng, 47), RequestParams{1, 2, {}});
  int64_t chunk_steps = 0;
  for (int i = 0; i < 7; ++i) {
    const StepPlan plan = sched.schedule();
    REQUIRE(plan_problem(plan, c).empty());
    // Decodes come first, 1 token each; the prompt gets the rest of the budget.
    REQUIRE(plan.seqs.size() >= 2);
    REQUIRE(plan.seqs[0].num_new_tokens == 1);
    REQUIRE(plan.seqs[1].num_new_tokens == 1);
    if (plan.seqs.size() == 3 && !plan.seqs[2].samples) {
      REQUIRE(plan.seqs[2].num_new_tokens == 8);
      ++chunk_steps;
    }
    REQUIRE(plan.num_tokens() <= 10);
    sched.update(model.run(plan));
  }
  REQUIRE(chunk_steps == 5);  // 47 = 5 * 8 + 7
  REQUIRE(model.read_errors == 0);
}

TEST_CASE("scheduler: reset_prefix_cache drops cached prompts (new weights recompute them)", "[rollout][scheduler]") {
  SchedulerConfig c = small_config();
  std::mt19937 rng(8);
  const auto prompt = random_prompt(rng, 30);  // 4 full blocks of 7
  const auto run_one = [&](Scheduler& s, FakeModel& m) {
    s.add_request(prompt, RequestParams{1, 3, {}});
    while (s.has_unfinished()) s.update(m.run(s.schedule()));
    s.take_finished();
  };
  Scheduler sched(c);
  FakeModel model(c);
  run_one(sched, model);
  REQUIRE(sched.stats().prefill_tokens_saved == 0);
  run_one(sched, model);  // same prompt again: its blocks are still cached
  REQUIRE(sched.stats().prefill_tokens_saved == 28);
  sched.reset_prefix_cache();
  REQUIRE(sched.block_pool().stats().num_cached == 0);
  run_one(sched, model);
  REQUIRE(sched.stats().prefill_tokens_saved == 28);  // nothing more saved after the reset
  REQUIRE(model.read_errors == 0);
}

TEST_CASE("scheduler: misuse of the step protocol is a checked programming error", "[rollout][scheduler]") {
  SchedulerConfig c = small_config();
  Scheduler sched(c);
  REQUIRE_THROWS_AS(sched.update({}), std::logic_error);  // nothing scheduled
  sched.add_request({1, 2, 3}, RequestParams{2, 4, {}});
  const StepPlan plan = sched.schedule();
  REQUIRE_THROWS_AS(sched.schedule(), std::logic_error);  // one step in flight
  REQUIRE_THROWS_AS(sched.update({}), std::logic_error);  // too few tokens
  const std::vector<SampledToken> swapped{{plan.seqs[1].seq_id, 5, 0}, {plan.seqs[0].seq_id, 5, 0}};
  REQUIRE_THROWS_AS(sched.update(swapped), std::logic_error);  // not in plan order
  SchedulerConfig bad = c;
  bad.max_num_batched_tokens = 0;
  REQUIRE_THROWS_AS(Scheduler(bad), std::logic_error);
}

TEST_CASE("scheduler: out of blocks, the youngest running sequence is preempted and recomputed later",
          "[rollout][scheduler]") {
  SchedulerConfig c;
  c.num_blocks = 4;
  c.block_size = 4;
  c.max_num_batched_tokens = 64;
  c.max_model_len = 64;
  Scheduler sched(c);
  FakeModel model(c);
  std::mt19937 rng(12);
  const std::vector<Job> jobs{{random_prompt(rng, 6), RequestParams{1, 10, {}}},
                              {random_prompt(rng, 6), RequestParams{1, 10, {}}}};
  for (const Job& j : jobs) sched.add_request(j.prompt, j.params);
  // Steps 0-2: both fit in 2 blocks each (positions 0..7). Step 3: the older one reaches position
  // 8 and needs a third block; the pool is empty, so the younger one makes room.
  for (int i = 0; i < 3; ++i) {
    const StepPlan plan = sched.schedule();
    REQUIRE(plan.seqs.size() == 2);
    REQUIRE(plan.preempted.empty());
    sched.update(model.run(plan));
  }
  StepPlan plan = sched.schedule();
  REQUIRE(plan.preempted == std::vector<SeqId>{1});
  REQUIRE(plan.seqs.size() == 1);
  REQUIRE(plan.seqs[0].seq_id == 0);
  REQUIRE(sched.num_waiting() == 1);
  REQUIRE(sched.num_running() == 1);
  sched.update(model.run(plan));
  std::map<RequestId, RequestOutput> outs;
  while (sched.has_unfinished()) {
    plan = sched.schedule();
    REQUIRE(plan_problem(plan, c).empty());
    sched.update(model.run(plan));
    for (auto& o : sched.take_finished()) outs[o.request_id] = std::move(o);
  }
  REQUIRE(model.read_errors == 0);
  REQUIRE(outs.at(0).samples[0].num_preemptions == 0);
  REQUIRE(outs.at(1).samples[0].num_preemptions >= 1);
  for (RequestId r = 0; r < 2; ++r) {
    const SampleSteps& st = outs.at(r).samples[0].steps;
    REQUIRE(st.arrival == 0);
    REQUIRE(st.first_scheduled == 0);
    REQUIRE(st.first_token == 0);
    REQUIRE(st.finished > 3);
  }
  for (RequestId r = 0; r < 2; ++r) REQUIRE(outs.at(r).samples[0].tokens == reference(jobs[size_t(r)].prompt, jobs[size_t(r)].params, 0));
  REQUIRE(sched.block_pool().num_free_blocks() == 4);
}

TEST_CASE("scheduler: a finished sequence leaves mid-batch and frees its blocks at once", "[rollout][scheduler]") {
  SchedulerConfig c = small_config();
  c.enable_prefix_caching = false;  // freed blocks are plain free blocks
  Scheduler sched(c);
  FakeModel model(c);
  std::mt19937 rng(13);
  sched.add_request(random_prompt(rng, 20), RequestParams{1, 1, {}});   // done after its prefill
  sched.add_request(random_prompt(rng, 9), RequestParams{2, 5, {}});
  StepPlan plan = sched.schedule();
  REQUIRE(plan.seqs.size() == 3);
  const int32_t free_before = sched.block_pool().num_free_blocks();
  sched.update(model.run(plan));
  auto done = sched.take_finished();
  REQUIRE(done.size() == 1);
  REQUIRE(done[0].request_id == 0);
  REQUIRE(done[0].samples[0].finish_reason == FinishReason::kLength);
  REQUIRE(sched.block_pool().num_free_blocks() == free_before + 3);  // 20 tokens: 3 blocks of 7
  plan = sched.schedule();
  REQUIRE(plan.seqs.size() == 2);
  for (const auto& s : plan.seqs) REQUIRE(s.request_id == 1);
  sched.update(model.run(plan));
}

TEST_CASE("scheduler: async scheduling (one step in flight) gives the synchronous outputs, tokens past a stop are dropped",
          "[rollout][scheduler]") {
  // Stops on about half the requests: each stopped sample was scheduled once more before its
  // stop was seen, and that step's token must not reach the output.
  const std::vector<Job> jobs = random_jobs(4242, 80, 40, 30);
  for (const int32_t blocks : {37, 15}) {  // 15 x 7 slots: preemption with tokens in flight
    SchedulerConfig c = small_config();
    c.num_blocks = blocks;
    c.max_model_len = 105;
    INFO("blocks " << blocks);
    const RunResult sync = drive(c, jobs);
    const RunResult async = drive(c, jobs, 0, true);
    require_matches_reference(jobs, async);
    REQUIRE(async.patched > 0);
    if (blocks == 15) REQUIRE(async.stats.preemptions > 0);
    for (const auto& [id, o] : sync.outputs)
      for (size_t k = 0; k < o.samples.size(); ++k) {
        const SampleOutput& a = async.outputs.at(id).samples[k];
        REQUIRE(a.tokens == o.samples[k].tokens);
        REQUIRE(a.logprobs == o.samples[k].logprobs);
        REQUIRE(a.finish_reason == o.samples[k].finish_reason);
        REQUIRE(a.steps.first_token >= a.steps.first_scheduled);
        REQUIRE(a.steps.finished >= a.steps.first_token);
      }
  }
}

TEST_CASE("scheduler: the async protocol's misuse is a checked programming error", "[rollout][scheduler]") {
  Scheduler sched(small_config());
  sched.add_request({1, 2, 3}, RequestParams{1, 4, {}});
  REQUIRE_THROWS_AS(sched.advance(), std::logic_error);  // nothing scheduled
  StepPlan plan = sched.schedule();
  sched.advance();
  REQUIRE(sched.has_in_flight());
  REQUIRE_THROWS_AS(sched.resolve({}), std::logic_error);  // one token expected
  plan = sched.schedule();  // scheduling with a step in flight is the point
  REQUIRE(plan.input_ids == std::vector<TokenId>{kPendingToken});
  REQUIRE_THROWS_AS(sched.advance(), std::logic_error);  // resolve the step in flight first
  REQUIRE_THROWS_AS(sched.update({}), std::logic_error);
}

TEST_CASE("scheduler: async, a stop not yet seen can preempt a sequence, and a sequence can wait out an empty plan",
          "[rollout][scheduler]") {
  // Three blocks of 4 slots, no prefix caching. A (4-token prompt) samples a stop token first;
  // B (7-token prompt) runs beside it. Synchronously A finishes at once; with A's stop still in
  // flight, A is scheduled once more, needs a second block and preempts B, which recomputes.
  // Tokens stay each sample's own (the run-alone reference); only the schedule differs.
  SchedulerConfig c;
  c.num_blocks = 3;
  c.block_size = 4;
  c.max_num_seqs = 4;
  c.max_num_batched_tokens = 64;
  c.max_model_len = 32;
  c.enable_prefix_caching = false;
  std::vector<TokenId> a_prompt;
  for (TokenId t = 1; a_prompt.size() < 4; ++t) {  // a prompt whose first sampled token is kStop
    std::vector<TokenId> p{t, t, t, t};
    if (reference(p, RequestParams{1, 1, {}}, 0)[0] == kStop) a_prompt = p;
    REQUIRE(t < 5000);
  }
  std::mt19937 rng(3);
  const std::vector<Job> jobs{{a_prompt, RequestParams{1, 8, {kStop}}}, {random_prompt(rng, 7), RequestParams{1, 4, {}}}};
  const RunResult sync = drive(c, jobs);
  const RunResult async = drive(c, jobs, 0, true);
  require_matches_reference(jobs, sync);
  require_matches_reference(jobs, async);
  CHECK(sync.stats.preemptions == 0);
  CHECK(async.stats.preemptions == 1);

  // A sequence awaiting its last token (max_new_tokens 1) holds its blocks and is never a victim;
  // the older one that needs a block preempts itself, the plan is empty, and the next resolve()
  // frees the blocks.
  const std::vector<Job> jobs2{{random_prompt(rng, 4), RequestParams{1, 6, {}}}, {random_prompt(rng, 7), RequestParams{1, 1, {}}}};
  const RunResult async2 = drive(c, jobs2, 0, true);
  require_matches_reference(jobs2, async2);
  const RunResult sync2 = drive(c, jobs2);
  require_matches_reference(jobs2, sync2);
}
