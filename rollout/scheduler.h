// The engine's scheduler: which sequences run in the next forward call, how many of their
// tokens, and where their K/V goes. Host bookkeeping only (no ATen, no CUDA); the model runner
// turns a StepPlan into tensors (core/model/attention.h's AttentionContext) and the sampler's
// tokens come back through update(). Unit tests drive it with a fake model.
//
// Requests and sequences. A request is one prompt and its RequestParams; it becomes `n`
// sequences (samples), each with its own tokens (prompt + output so far), block table and
// `num_computed` = tokens whose K/V is in the cache. There is no prefill/decode mode: each step a
// sequence computes some of its not-yet-computed tokens, and when that reaches its last token the
// model samples the next one (a decode is the case "1 token left"). So a recomputed (preempted)
// sequence, a chunked prefill and a decode are all the same operation.
//
// A step (schedule(), then update()):
//   1. Running sequences with one token left (decodes), oldest first, 1 token each.
//   2. Running sequences part-way through a chunked prefill, oldest first, as many tokens as the
//      budget has left.
//   3. Waiting sequences, front first (FCFS: a sequence that does not fit blocks the ones behind
//      it, so long prompts are not starved by short ones), while running < max_num_seqs, budget
//      and blocks last. With prefix caching, a sequence first takes the cached full blocks of its
//      prefix (its siblings' prompt blocks, or its own blocks from before a preemption).
//   Budget rule: the step's new tokens never exceed max_num_batched_tokens. Decodes go first so a
//   long prompt arriving never stalls sequences that are generating; with chunked prefill a prompt
//   takes whatever budget is left (its tail next step); without it a prompt is admitted only
//   when all of it fits the budget left.
//
// Preemption (recompute). When a running sequence needs a block and none is free, the youngest
// running sequence admitted after it and not yet scheduled in this step is preempted: its blocks
// are freed, its num_computed reset to 0, and it goes to the FRONT of the waiting queue (it keeps
// its tokens and recomputes their K/V when readmitted; its full blocks stay in the prefix cache
// until evicted, so often only its tail is recomputed). With no younger victim left the sequence
// preempts itself. No waiting sequence is admitted in a step that preempted (it would only take
// the blocks back). Why this always terminates: a sequence never loses its blocks to a younger
// one, a lone sequence always fits (add_request checks it), generated tokens are never lost, and
// every step schedules at least the first sequence it looks at -- so decodes make steady,
// irreversible progress and a prefill that yields to them gets its blocks once they finish. Never
// a crash and never a wrong token: a recomputed sequence recomputes exactly its own tokens.
//
// Prefix caching and steps. A full block is registered in the cache in the step that schedules
// its last token, so a sibling admitted later in the SAME step already hits it. Its K/V is then
// written and read by the same forward call; that is correct because paged attention writes all
// the call's new K/V (slot_mapping) before any query reads the cache, layer by layer (vLLM's
// order too) -- the contract the engine's Attention must keep. Blocks registered in a step are
// never freed in that step (only sequences not scheduled yet can be preempted).
//
// One step in flight (async scheduling, EngineConfig::async_scheduling). The engine may schedule
// step t+1 while the device still computes step t, so the host's work overlaps the GPU's. The
// protocol is then schedule(t+1) -> [launch t+1] -> resolve(t) -> advance(t+1) -> schedule(t+2),
// where the synchronous one is schedule(t) -> update(t) (= advance(t) + resolve(t)). advance()
// gives each sampling sequence of the plan a placeholder token, kPendingToken, whose value is on
// the device: step t+1 computes it from there (the engine patches the input ids on the device),
// and resolve() writes it on the host once the tokens come back. Consequences, all handled here:
//   - stop tokens and stop strings are seen one step late: a sequence that stopped at step t was
//     already scheduled at t+1; that step's token for it is dropped (never in the output);
//   - a sequence whose placeholder is its last token (max_new_tokens, max_model_len) is not
//     scheduled again and is never a preemption victim: resolve() finishes it;
//   - a block is registered in the prefix cache only once every token in it is known;
//   - a finished sequence frees its blocks while the device may still write the dropped step's
//     K/V into them; a block handed out again is written only by later steps, which the device
//     runs after that one (one stream), so the late write is harmless.
// What stays the same: every token comes from its (seed, sample, position) stream and carries the
// model's log-prob of it, so where the arithmetic does not depend on the batch (the CPU) both
// protocols give the same tokens, log-probs and finish reasons (tests drive both). What may not:
// decisions that hinge on a stop not yet seen. A stopped sample holds its blocks one step longer,
// so a block shortage can preempt a sequence the synchronous protocol would not, and a waiting
// sequence can be admitted a step later (its milestones and preemption count differ); on the GPU
// a different batch moves bf16 logits in the last bits, as any change of batch does. And a
// sequence may preempt itself because the blocks it needs are held by sequences awaiting their
// last token (never victims): the plan can then be empty, and the next resolve() frees those
// blocks, so the run still makes progress.
//
// Limits. add_request() fails a request alone, with a reason, when it could never run: empty
// prompt, a prompt id below 0 or (SchedulerConfig::vocab_size) past the vocabulary, n < 1,
// max_new_tokens < 1, prompt + max_new_tokens > max_model_len, more blocks for one sample's
// prompt + max_new_tokens - 1 cached tokens (the last sampled token is never computed) than the
// pool has, or (chunked prefill off) a recompute longer than the step budget.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <unordered_map>
#include <memory>
#include <optional>
#include <vector>

#include "rollout/block_pool.h"

namespace fp8rl::rollout {

using RequestId = int64_t;
using SeqId = int64_t;

// The input id of a token sampled by the step still in flight (async scheduling): its value is
// on the device only. Never a real id (ids are >= 0).
inline constexpr TokenId kPendingToken = -1;

// What the scheduler needs of a request; the sampling knobs (temperature, top-k/p, seed) travel
// beside it to the sampler and do not affect scheduling.
struct RequestParams {
  int32_t n = 1;                      // samples (the GRPO group size); they share the prompt's blocks
  int32_t max_new_tokens = 16;        // finish reason `length` after this many generated tokens
  std::vector<TokenId> stop_token_ids;  // finish reason `stop` after generating one (it is kept in the output)
  std::vector<std::string> stop_strings;  // finish reason `stop` once the generated bytes hold one (stop_strings.h;
                                          // needs SchedulerConfig::token_bytes)
};

struct SchedulerConfig {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t max_num_seqs = 256;              // running sequences at most (rollout.max_num_seqs)
  int32_t max_num_batched_tokens = 8192;   // new tokens per step at most
  int32_t max_model_len = 4096;            // prompt + generated tokens at most
  bool enable_chunked_prefill = true;
  bool enable_prefix_caching = true;       // rollout.enable_prefix_caching
  int64_t vocab_size = 0;                  // > 0: prompt ids must be below it (else unchecked)
  // Each token id's bytes (hf::Tokenizer::id_to_bytes), for stop strings; null: requests with
  // stop strings fail.
  std::shared_ptr<const std::vector<std::string>> token_bytes;
};

enum class FinishReason { kNone, kStop, kLength, kError };
const char* to_string(FinishReason r);  // "none" | "stop" | "length" | "error"

// One scheduled sequence of a step. Its new tokens are positions
// [num_cached_tokens, num_cached_tokens + num_new_tokens).
struct ScheduledSeq {
  SeqId seq_id = 0;
  RequestId request_id = 0;
  int32_t sample_index = 0;
  int32_t num_cached_tokens = 0;  // tokens already in the cache before this step
  int32_t num_new_tokens = 0;
  int32_t context_len = 0;        // num_cached_tokens + num_new_tokens: the keys it attends over
  bool samples = false;           // its last new token is its last token: the model samples the next
};

inline constexpr int32_t kPadBlock = 0;  // block_tables padding: never read (context_lens bounds reads)
                                          // and a valid id, so a kernel that over-reads stays in bounds

// One forward call, as host vectors in the layout AttentionContext wants. S = seqs.size(),
// N = total new tokens = cu_seqlens_q.back().
struct StepPlan {
  int64_t step = 0;
  std::vector<ScheduledSeq> seqs;
  std::vector<TokenId> input_ids;      // [N] the new tokens, sequence after sequence
  std::vector<int64_t> positions;      // [N] their positions in their sequence (RoPE)
  std::vector<int64_t> slot_mapping;   // [N] block_table[pos / block_size] * block_size + pos % block_size
  std::vector<int64_t> cu_seqlens_q;   // [S+1]
  std::vector<int64_t> cu_seqlens_k;   // [S+1] over context_lens
  std::vector<int32_t> context_lens;   // [S]
  int32_t max_blocks_per_seq = 0;      // row width of block_tables
  std::vector<int32_t> block_tables;   // [S, max_blocks_per_seq] row-major, padded with kPadBlock
  int64_t max_seqlen_q = 0;
  int64_t max_seqlen_k = 0;
  std::vector<int64_t> logits_indices; // packed index of the last token of each sampling sequence, in seqs order
  std::vector<SeqId> preempted;        // sequences preempted while making this plan
  int64_t num_tokens() const { return cu_seqlens_q.empty() ? 0 : cu_seqlens_q.back(); }
  bool empty() const { return seqs.empty(); }
};

// The sampler's token for one sampling sequence of the pending step.
struct SampledToken {
  SeqId seq_id = 0;
  TokenId token = 0;
  float logprob = 0.0f;  // carried into the output for the trainer's importance ratio
};

// Step numbers (StepPlan::step) of a sample's milestones. The engine, which times its steps,
// turns them into the queue / prefill / decode times of the sample.
struct SampleSteps {
  int64_t arrival = -1;          // the step whose schedule() came next after add_request
  int64_t first_scheduled = -1;  // first step computing any of its tokens
  int64_t first_token = -1;      // step that sampled its first token (its prefill ended)
  int64_t finished = -1;         // step that sampled its last token
};

struct SampleOutput {
  std::vector<TokenId> tokens;   // generated tokens only (a stop token, or the token that completed a stop string, included)
  std::vector<float> logprobs;   // one per generated token
  FinishReason finish_reason = FinishReason::kNone;
  int32_t num_preemptions = 0;
  SampleSteps steps;
};

struct RequestOutput {
  RequestId request_id = 0;
  std::vector<SampleOutput> samples;  // by sample index; empty when the request failed
  FinishReason finish_reason = FinishReason::kNone;  // kError when it failed, else kNone
  std::string error;                  // why it failed (add_request's checks)
  // When it failed because one sample's keys and values (prompt + max_new_tokens - 1 tokens)
  // exceed the whole KV pool: those tokens and the pool's (else 0). A shortage of memory, not of
  // the request's data: a caller can say which settings make room.
  int64_t kv_tokens_needed = 0, kv_tokens_in_pool = 0;
};

struct SchedulerStats {
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t computed_tokens = 0;        // new tokens scheduled over all steps (prefill + decode + recompute)
  int64_t prefill_tokens_saved = 0;   // prompt/recompute tokens taken from the prefix cache
  int64_t finished_requests = 0;
  int64_t failed_requests = 0;
  BlockPoolStats pool;
};

class Scheduler {
 public:
  // Bad configs (non-positive sizes) are FP8RL_CHECK: the engine builds this from a validated recipe.
  explicit Scheduler(const SchedulerConfig& config);

  // Queues a request's n sequences (or records it as failed, with a reason, in the finished
  // outputs). Returns its id either way.
  RequestId add_request(std::vector<TokenId> prompt, const RequestParams& params);
  // Records a request its caller refused before queuing it (the engine: sampling settings the
  // scheduler does not see) as failed, "request <id>: <why>", in the finished outputs.
  RequestId reject(const std::string& why);

  // The next step's plan; empty when nothing can run (then nothing is waiting either, since a
  // waiting sequence always fits once the running ones finish; with a step in flight, also when
  // every running sequence awaits its last token). A plan with sequences must be followed by
  // update(), or by advance(), before the next schedule(); an empty one is no step (it takes no
  // step number and nothing follows it).
  StepPlan schedule();
  // The sampled token of every sampling sequence of the pending plan, in its seqs order.
  // Appends them, finishes sequences (stop / length) and frees their blocks. advance() then
  // resolve(), with nothing in flight.
  void update(std::span<const SampledToken> sampled);

  // Async scheduling (see above). advance(): the pending plan is launched; its sampling sequences
  // get a kPendingToken each and the next schedule() may run. At most one step is in flight:
  // resolve() the previous one first.
  void advance();
  // The tokens of the step in flight, in its plan's sampling order (as update() takes them),
  // including those of sequences that finished meanwhile (dropped).
  void resolve(std::span<const SampledToken> sampled);
  bool has_in_flight() const { return in_flight_.has_value(); }

  // Finished (and failed) requests since the last call, in finishing order.
  std::vector<RequestOutput> take_finished();

  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  const SchedulerConfig& config() const { return config_; }
  const BlockPool& block_pool() const { return pool_; }
  // The weights changed: cached prefixes are stale (BlockPool::reset_prefix_cache).
  void reset_prefix_cache() { pool_.reset_prefix_cache(); }
  SchedulerStats stats() const;

 private:
  struct Sequence {
    SeqId id = 0;
    RequestId request_id = 0;
    int32_t sample_index = 0;
    int32_t num_prompt_tokens = 0;
    std::vector<TokenId> tokens;        // prompt + generated
    std::vector<float> logprobs;        // per generated token
    int32_t num_computed = 0;
    std::vector<BlockId> block_table;
    std::vector<BlockHash> block_hashes;  // chained hashes of its first full blocks (tokens never change)
    int64_t scheduled_step = -1;
    bool running = false;               // in running_ (else waiting, or finished)
    SampleSteps steps;
    int32_t num_preemptions = 0;
    FinishReason finish_reason = FinishReason::kNone;
    std::string stop_window;            // recent generated bytes (stop strings)
    int32_t num_registered = 0;         // leading blocks registered in the prefix cache
    bool awaiting = false;              // its last token is a kPendingToken (its step is in flight)
    bool awaiting_last = false;         // ... and that token is its last: not scheduled again
  };
  // The step in flight: its number and sampling sequences (those given a placeholder marked).
  struct InFlight {
    int64_t step = 0;
    std::vector<SeqId> sampling;
    std::vector<uint8_t> placed;
  };
  struct Request {
    RequestParams params;
    std::vector<SeqId> seqs;
    int32_t num_finished = 0;
  };

  int32_t blocks_for(int64_t tokens) const;
  BlockHash block_hash(Sequence& s, int32_t i);
  void schedule_seq(Sequence& s, int32_t num_new, StepPlan& plan);
  void preempt(SeqId id, StepPlan& plan);
  bool try_admit(Sequence& s, int32_t& budget, StepPlan& plan);
  void finish(Sequence& s, FinishReason r, int64_t step);
  void register_blocks(Sequence& s, int32_t computed_end);
  void check_sampled(std::span<const SampledToken> sampled, std::span<const SeqId> expected, int64_t step) const;
  RequestId fail(RequestId id, std::string why);

  SchedulerConfig config_;
  BlockPool pool_;
  std::unordered_map<SeqId, Sequence> seqs_;
  std::unordered_map<RequestId, Request> requests_;
  std::deque<SeqId> waiting_;
  std::vector<SeqId> running_;  // admission order: oldest first
  std::vector<RequestOutput> finished_;
  bool pending_ = false;
  std::vector<SeqId> pending_sampling_;  // the pending plan's sampling sequences, in order
  std::optional<InFlight> in_flight_;
  int64_t step_ = 0;
  RequestId next_request_ = 0;
  SeqId next_seq_ = 0;
  int64_t preemptions_ = 0, computed_tokens_ = 0, tokens_saved_ = 0, finished_requests_ = 0, failed_requests_ = 0;
};

}  // namespace fp8rl::rollout
