#include "rollout/engine.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <unordered_map>

#include "core/util/env.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "rollout/decode_graphs.h"
#include "rollout/kv_cache.h"
#include "rollout/paged_attention.h"
#include "rollout/shared_prefix.h"
#include "rollout/step_context.h"
#include "rollout/transfer.h"

namespace fp8rl::rollout {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

at::Tensor device_tensor(const std::vector<int64_t>& v, at::ScalarType dtype, at::Device device) {
  return upload(std::span<const int64_t>(v), dtype, device);
}

// The inputs of a step that are tokens of the step in flight (async scheduling): packed row
// rows[i] takes that step's sampled token number from[i].
struct PendingInputs {
  std::vector<int64_t> rows, from;
  bool empty() const { return rows.empty(); }
};

PendingInputs pending_inputs(const StepPlan& plan, std::span<const SeqId> in_flight_sampling) {
  PendingInputs p;
  std::unordered_map<SeqId, int64_t> index;
  for (int64_t q = 0; q < plan.num_tokens(); ++q) {
    if (plan.input_ids[static_cast<size_t>(q)] != kPendingToken) continue;
    if (index.empty())
      for (size_t i = 0; i < in_flight_sampling.size(); ++i) index[in_flight_sampling[i]] = static_cast<int64_t>(i);
    // The sequence of row q: pending tokens are always a sequence's last new token.
    const auto s = std::upper_bound(plan.cu_seqlens_q.begin(), plan.cu_seqlens_q.end(), q) - plan.cu_seqlens_q.begin() - 1;
    const auto it = index.find(plan.seqs[static_cast<size_t>(s)].seq_id);
    FP8RL_CHECK(it != index.end(), "Engine: a pending input token that the step in flight did not sample");
    p.rows.push_back(q);
    p.from.push_back(it->second);
  }
  return p;
}

// ids[rows] = sampled[from], on the device, stream-ordered after the step that sampled them.
void patch_ids(const at::Tensor& ids, const PendingInputs& p, const at::Tensor& sampled) {
  if (p.empty()) return;
  const auto n = static_cast<int64_t>(p.rows.size());
  bool identity = true;  // the common decode step: the same sequences, in the same order
  for (int64_t i = 0; i < n && identity; ++i) identity = p.rows[size_t(i)] == i && p.from[size_t(i)] == i;
  if (identity) {
    ids.narrow(0, 0, n).copy_(sampled.narrow(0, 0, n));
    return;
  }
  ids.index_copy_(0, device_tensor(p.rows, at::kLong, ids.device()),
                  sampled.index_select(0, device_tensor(p.from, at::kLong, sampled.device())));
}

}  // namespace

// What the kept graphs read besides the weights: the directory of the current cache's addresses,
// and the attention they were captured with, bound to each rollout's cache in turn (to an empty
// cache between rollouts).
struct Engine::KeptGraphs {
  KvDirectory directory;
  KvCache unbound;
  PagedAttention attention;
  std::unique_ptr<DecodeGraphs> graphs;
  int64_t max_batch = 0, max_blocks = 0;  // the largest shapes seen: new graphs are made for them
  KeptGraphs(int64_t num_layers, at::Device device) : directory(num_layers, device), attention(unbound) {}
};

Engine::~Engine() = default;

void Engine::drop_graphs() {
  if (!kept_) return;
  kept_->graphs.reset();
  kept_->max_batch = kept_->max_blocks = 0;
}

Engine::Engine(const model::CausalLM& model, EngineConfig config) : model_(model), config_(config) {
  if (config_.max_model_len <= 0) config_.max_model_len = static_cast<int32_t>(model.config().max_position_embeddings);
  FP8RL_CHECK(config_.max_model_len > 0, "Engine: the model has no max_position_embeddings; set max_model_len");
}

std::vector<GenerateOutput> Engine::generate(const std::vector<GenerateRequest>& requests) {
  const auto t0 = std::chrono::steady_clock::now();
  const c10::InferenceMode no_autograd;  // rollouts never need gradients; keeps the cache writes cheap
  stats_ = {};
  if (requests.empty()) return {};  // nothing to cache or capture (decode graphs need a batch > 0)
  const hf::ModelShape& shape = model_.config().shape;
  const at::Device device = model_.device();
  KvCacheShape kv{shape.num_hidden_layers, shape.num_key_value_heads, shape.head_dim, config_.block_size, model_.dtype(),
                  device, config_.fp8_kv_cache};
  // Blocks: as many as all requests need at once (no more is ever useful), capped by memory on
  // CUDA; exactly config_.num_blocks when set.
  int64_t needed = 1, samples = 0, longest = 1;
  for (const GenerateRequest& r : requests) {
    const int64_t len = static_cast<int64_t>(r.prompt.size()) + std::max(r.params.max_new_tokens, 1);
    needed += static_cast<int64_t>(std::max(r.params.n, 1)) * ceil_div(len, config_.block_size);
    samples += std::max(r.params.n, 1);
    longest = std::max(longest, std::min<int64_t>(len, config_.max_model_len));
  }
  // Decode steps replay CUDA graphs where the decode kernel runs: one extra block, never handed
  // to the scheduler, holds the graphs' padding rows. With keep_decode_graphs the graphs, the
  // cache directory they read and the attention they were captured with are kept from earlier
  // rollouts; else they are this rollout's own. FP8RL_KEEP_DECODE_GRAPHS=0/1 overrides it.
  const int64_t Hq = shape.num_attention_heads;
  const bool graphs_on = device.is_cuda() && !config_.enforce_eager && config_.use_decode_kernel;
  const bool keep = graphs_on && env_switch("FP8RL_KEEP_DECODE_GRAPHS", config_.keep_decode_graphs);
  // Kept graphs' pool memory is reserved for them but not allocated: it counts as used.
  const int64_t held = keep && kept_ && kept_->graphs ? kept_->graphs->pool_idle_bytes() : 0;
  const int64_t blocks = config_.num_blocks > 0
                             ? config_.num_blocks
                             : KvCache::blocks_that_fit(kv, config_.gpu_memory_utilization, needed, held);
  if (keep && !kept_) kept_ = std::make_unique<KeptGraphs>(shape.num_hidden_layers, device);
  KvCache cache(kv, blocks + (graphs_on ? 1 : 0), keep ? &kept_->directory : nullptr);
  std::optional<PagedAttention> local;  // without kept graphs: this rollout's own
  PagedAttention& paged = keep ? kept_->attention : local.emplace(cache, config_.use_decode_kernel);
  paged.bind(cache);
  const int64_t fused_stores_before = paged.fused_stores();
  // The kept attention lets go of this rollout's cache when the rollout ends, also by an exception.
  struct Unbind {
    KeptGraphs* kept;
    ~Unbind() {
      if (kept) kept->attention.bind(kept->unbound);
    }
  } unbind{keep ? kept_.get() : nullptr};
  const bool decode_kernel = paged.decode_kernel_applies(model_.dtype(), Hq);
  // Sequences per shared-prefix chunk (0: decode steps read every sequence's keys alone).
  const int32_t members = shared_prefix_members(Hq, shape.num_key_value_heads);
  // by_size: shared_prefix_pays (rollout/shared_prefix.h) on this rollout's prompts; without
  // prefix caching the samples hold no common blocks, so there is nothing to share.
  bool share = config_.shared_prefix_decode == EngineConfig::SharedPrefixDecode::on;
  if (config_.shared_prefix_decode == EngineConfig::SharedPrefixDecode::by_size && config_.enable_prefix_caching &&
      decode_kernel && members >= 2) {
    std::vector<PromptShare> prompts;
    prompts.reserve(requests.size());
    for (const GenerateRequest& r : requests) prompts.push_back({static_cast<int64_t>(r.prompt.size()), r.params.n});
    const int64_t per_token_layer = kv.bytes_per_block() / (int64_t{config_.block_size} * shape.num_hidden_layers);
    const double bytes = shared_prompt_bytes_per_layer(prompts, config_.max_num_seqs, config_.block_size, per_token_layer);
    const int64_t l2 = l2_cache_bytes();
    share = shared_prefix_pays(bytes, l2);
    log::debug(cat("rollout: shared prompt K/V in flight ", bytes / 1e6, " MB a layer, L2 ", l2 / 1e6,
                   " MB: shared-prefix decode ", share ? "on" : "off"));
  }
  const int32_t prefix_members = share && decode_kernel && members >= 2 ? members : 0;
  std::unique_ptr<DecodeGraphs> own_graphs;  // without kept graphs (they read the cache: gone before it)
  DecodeGraphs* graphs = nullptr;
  int64_t captured_before = 0, saved_before = 0;
  double gpu_seconds_before = 0, capture_seconds_before = 0;
  if (graphs_on && decode_kernel) {
    const int64_t max_batch = std::min<int64_t>(config_.max_num_seqs, samples);
    const int64_t max_blocks = ceil_div(longest, config_.block_size);
    if (keep) {
      std::unique_ptr<DecodeGraphs>& g = kept_->graphs;
      if (g && !g->fits(max_batch, max_blocks, prefix_members)) {
        log::debug("rollout: this rollout's shape outgrows the kept decode graphs; capturing anew");
        g.reset();
      }
      if (!g)
        g = std::make_unique<DecodeGraphs>(model_, &paged, std::max(max_batch, kept_->max_batch),
                                           std::max(max_blocks, kept_->max_blocks), config_.block_size,
                                           blocks * config_.block_size, prefix_members);
      kept_->max_batch = std::max(max_batch, kept_->max_batch);
      kept_->max_blocks = std::max(max_blocks, kept_->max_blocks);
      g->set_pad_slot(blocks * config_.block_size);
      graphs = g.get();
      captured_before = graphs->graphs_captured();
      saved_before = graphs->shared_prefix_key_reads_saved();
      gpu_seconds_before = graphs->replay_gpu_seconds();
      capture_seconds_before = graphs->capture_seconds();
    } else {
      own_graphs = std::make_unique<DecodeGraphs>(model_, &paged, max_batch, max_blocks, config_.block_size,
                                                  blocks * config_.block_size, prefix_members);
      graphs = own_graphs.get();
    }
  }
  // A rollout's first forward runs eagerly (DecodeGraphs says why); replays only after it.
  bool eager_forward_done = false;
  // FP8RL_SPLIT_MIXED_STEPS=0/1 overrides split_mixed_steps: a before/after from one binary.
  const bool split_mixed = env_switch("FP8RL_SPLIT_MIXED_STEPS", config_.split_mixed_steps);
  stats_.kv_blocks = blocks;
  stats_.kv_bytes = cache.nbytes();

  SchedulerConfig sc;
  sc.num_blocks = static_cast<int32_t>(blocks);
  sc.block_size = config_.block_size;
  sc.max_num_seqs = config_.max_num_seqs;
  sc.max_num_batched_tokens = config_.max_num_batched_tokens;
  sc.max_model_len = config_.max_model_len;
  sc.enable_chunked_prefill = config_.enable_chunked_prefill;
  sc.enable_prefix_caching = config_.enable_prefix_caching;
  sc.vocab_size = shape.vocab_size;  // an id past it would fail the whole rollout in the embedding
  sc.token_bytes = config_.token_bytes;
  Scheduler sched(sc);
  std::unordered_map<RequestId, size_t> index_of;  // request id -> position in `requests`
  // Bad sampling settings fail their request alone here; in sample() they would fail the rollout.
  for (size_t i = 0; i < requests.size(); ++i) {
    const std::optional<std::string> bad = sampling_params_error(requests[i].sampling);
    index_of[bad ? sched.reject(*bad) : sched.add_request(requests[i].prompt, requests[i].params)] = i;
  }

  std::vector<double> step_end;  // seconds since t0 when each step's tokens were read
  std::vector<GenerateOutput> out(requests.size());
  auto collect = [&] {
    for (RequestOutput& r : sched.take_finished()) out[index_of.at(r.request_id)].output = std::move(r);
  };
  collect();  // requests that failed at once

  // One step's forward and sampling, launched; its tokens come back through `host`.
  struct Launched {
    std::vector<SeqId> sampling;  // the plan's sampling sequences, in order
    at::Tensor tokens;            // [S'] int64 on the device (the next step's pending inputs)
    Readback host;                // tokens [S'] int64, log-probs [S'] float32
    bool graph = false;           // replayed from a decode graph
  };
  std::vector<SamplingParams> params;
  std::vector<SampleKey> keys;
  const auto launch = [&](const StepPlan& plan, const Launched* in_flight) {
    Launched l;
    const PendingInputs pending =
        pending_inputs(plan, in_flight ? std::span<const SeqId>(in_flight->sampling) : std::span<const SeqId>());
    FP8RL_CHECK(pending.empty() || in_flight, "Engine: a pending input token with no step in flight");
    at::Tensor logits;  // [S', V]: the sampling sequences' last positions
    if (graphs && eager_forward_done && graphs->takes(plan)) {
      if (pending.empty())
        logits = graphs->run(plan);
      else
        logits = graphs->run(plan, [&](const at::Tensor& ids) { patch_ids(ids, pending, in_flight->tokens); });
      ++stats_.graph_steps;
      l.graph = true;
    } else {
      const bool decode_step = plan.num_tokens() == static_cast<int64_t>(plan.seqs.size());
      const auto one_token = [](const ScheduledSeq& s) { return s.num_new_tokens == 1; };
      if (!decode_step && std::any_of(plan.seqs.begin(), plan.seqs.end(), one_token)) ++stats_.mixed_steps;
      StepContextOptions o;
      o.decode_kernel = decode_kernel;
      o.split_mixed = split_mixed;
      const bool shared =
          decode_step && decode_kernel && prefix_members > 0 &&
          shared_prefix_pass_runs(static_cast<int64_t>(plan.seqs.size()), shape.num_key_value_heads, prefix_members);
      o.prefix_members = shared ? prefix_members : 0;
      const model::AttentionContext ctx =
          step_context(plan, config_.block_size, device, &paged, o, &stats_.shared_prefix_key_reads_saved);
      std::vector<int64_t> ids(plan.input_ids.begin(), plan.input_ids.end());
      for (int64_t& id : ids) id = id == kPendingToken ? 0 : id;
      const at::Tensor ids_d = device_tensor(ids, at::kLong, device);
      if (!pending.empty()) patch_ids(ids_d, pending, in_flight->tokens);
      const at::Tensor hidden = model_.forward(ids_d, device_tensor(plan.positions, at::kLong, device), ctx);
      eager_forward_done = true;
      if (!plan.logits_indices.empty())
        logits = model_.lm_head(hidden.index_select(0, device_tensor(plan.logits_indices, at::kLong, device)));
    }
    if (plan.logits_indices.empty()) return l;
    params.clear();
    keys.clear();
    for (const ScheduledSeq& s : plan.seqs) {
      if (!s.samples) continue;
      params.push_back(requests[index_of.at(s.request_id)].sampling);
      keys.push_back({static_cast<uint64_t>(s.sample_index), s.context_len});  // position of the new token
      l.sampling.push_back(s.seq_id);
    }
    const SampleResult r = sample(logits, params, keys);
    // Asynchronous device-to-host copies, read once the host has queued other work.
    l.tokens = r.tokens;
    l.host = Readback({r.tokens, r.logprobs});
    return l;
  };
  // The tokens of a launched step, once they are on the host.
  const auto sampled_of = [](Launched& l) {
    std::vector<SampledToken> sampled;
    if (l.sampling.empty()) return sampled;
    const std::vector<at::Tensor>& host = l.host.wait();
    const int64_t* tp = host[0].data_ptr<int64_t>();
    const float* lpp = host[1].data_ptr<float>();
    for (size_t j = 0; j < l.sampling.size(); ++j)
      sampled.push_back({l.sampling[j], static_cast<TokenId>(tp[j]), lpp[j]});
    return sampled;
  };
  const auto step_done = [&] {
    step_end.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    collect();
  };

  // Synchronous: schedule, launch, read the tokens, update. Async (one step in flight): schedule
  // and launch step t+1 before reading step t's tokens, so the host's scheduling, input copies
  // and launches overlap the device's work on step t (scheduler.h says what changes).
  std::optional<Launched> in_flight;
  while (sched.has_unfinished()) {
    const auto step_start = std::chrono::steady_clock::now();
    const StepPlan plan = sched.schedule();
    if (plan.empty()) {
      // Progress only while the step in flight holds tokens that finish sequences: resolve it.
      FP8RL_CHECK(in_flight && !in_flight->sampling.empty(), "Engine: the scheduler made no progress with work left");
      sched.resolve(sampled_of(*in_flight));
      step_done();
      in_flight.reset();
      continue;
    }
    Launched l = launch(plan, in_flight ? &*in_flight : nullptr);
    if (!config_.async_scheduling) {
      sched.update(sampled_of(l));
      step_done();
      if (!l.graph)
        stats_.eager_step_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
      continue;
    }
    if (in_flight) {
      sched.resolve(sampled_of(*in_flight));
      step_done();
    }
    sched.advance();
    in_flight = std::move(l);
  }
  if (in_flight) {  // every sequence it sampled for had finished: its tokens are dropped
    sched.resolve(sampled_of(*in_flight));
    step_done();
  }
  for (const GenerateOutput& o : out)
    for (const SampleOutput& s : o.output.samples) stats_.generated_tokens += static_cast<int64_t>(s.tokens.size());
  const SchedulerStats ss = sched.stats();
  stats_.steps = ss.steps;
  stats_.prefill_tokens_saved = ss.prefill_tokens_saved;
  stats_.preemptions = ss.preemptions;
  if (graphs) {
    stats_.graphs_captured = graphs->graphs_captured() - captured_before;
    stats_.graph_gpu_seconds = graphs->replay_gpu_seconds() - gpu_seconds_before;
    stats_.graph_capture_seconds = graphs->capture_seconds() - capture_seconds_before;
    stats_.shared_prefix_key_reads_saved += graphs->shared_prefix_key_reads_saved() - saved_before;
  }
  stats_.fused_kv_stores = paged.fused_stores() - fused_stores_before;
  own_graphs.reset();
  cache.release();  // kept graphs stay, with the directory (the kept attention is unbound on return)
  // Step s ends at step_end[s]; a milestone at step s happened during it.
  auto at_step = [&](int64_t s, bool end) {
    if (s < 0 || step_end.empty()) return 0.0;
    const size_t i = static_cast<size_t>(std::min<int64_t>(s, static_cast<int64_t>(step_end.size()) - 1));
    return end ? step_end[i] : (i == 0 ? 0.0 : step_end[i - 1]);
  };
  for (GenerateOutput& o : out)
    for (const SampleOutput& s : o.output.samples)
      o.times.push_back({at_step(s.steps.first_scheduled, false) - at_step(s.steps.arrival, false),
                         at_step(s.steps.first_token, true) - at_step(s.steps.first_scheduled, false),
                         at_step(s.steps.finished, true) - at_step(s.steps.first_token, true)});
  stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace fp8rl::rollout
