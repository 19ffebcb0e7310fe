// The in-process generation engine: drives the trainer's own CausalLM (FP8 or BF16 projections,
// the same tensors) through the scheduler (rollout/scheduler.h), a paged KV cache
// (rollout/kv_cache.h, rollout/paged_attention.h) and the sampler (rollout/sampler.h). It owns no
// weights and has no model definition of its own.
//
// generate() is one rollout: it sizes the KV cache (rollout.gpu_memory_utilization on CUDA),
// runs every request to completion with continuous batching, and releases the cache, so the
// update phase gets the memory back. A new scheduler per rollout also means cached prefixes never
// outlive the weights they were computed with (weight versions only change between rollouts).
//
// With keep_decode_graphs, the CUDA graphs of decode steps are captured once per batch bucket
// and kept across rollouts: the weights they read are updated in place by the trainer, and the
// per-rollout KV cache is reached through a fixed directory of its addresses
// (rollout/kv_cache.h). drop_graphs() frees them. They hold their memory pool and one batch of
// logits between rollouts.
//
// One step: schedule -> tensors of the plan (ids, positions, AttentionContext with slots, block
// tables, key slots) -> model.forward (packed, paged attention) -> lm_head on the sampling rows ->
// sample -> update. Decode steps (one new token per sequence) on CUDA read the cache in place
// through the paged decode kernel and, unless enforce_eager, replay a CUDA graph of the whole
// forward (rollout/decode_graphs.h); prefill and mixed steps run eagerly (with
// split_mixed_steps a mixed step's one-token rows on the decode kernel, the rest on the
// reference path: rollout/step_context.h).
// With shared_prefix_decode the kernel reads the prompt blocks a prompt's samples share once per
// chunk of samples instead of once per sample (rollout/shared_prefix.h); by default only where
// the prompts in flight outgrow L2.
//
// Host and device. Inputs go over in asynchronous copies from pinned memory and the tokens come
// back the same way (rollout/transfer.h), so the host waits for the device only when it reads a
// step's tokens. With async_scheduling the host also schedules and launches step t+1 before it
// reads step t's tokens: the tokens step t+1 needs from step t are patched into its inputs on the
// device, and stop conditions are seen one step late (the scheduler drops the extra token;
// rollout/scheduler.h, which also says what may differ: the sampling streams do not).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/model/decoder.h"
#include "rollout/sampler.h"
#include "rollout/scheduler.h"

namespace fp8rl::rollout {

struct EngineConfig {
  int32_t block_size = 16;
  int32_t max_num_seqs = 256;             // rollout.max_num_seqs
  int32_t max_num_batched_tokens = 8192;  // new tokens per step
  int32_t max_model_len = 0;              // 0: the model's max_position_embeddings
  bool enable_chunked_prefill = true;
  bool enable_prefix_caching = true;      // rollout.enable_prefix_caching
  bool enforce_eager = false;             // rollout.enforce_eager: no CUDA graphs for decode steps
  bool use_decode_kernel = true;          // false: every step on the gather reference path (tests)
  bool fp8_kv_cache = false;              // rollout.kv_cache_dtype fp8: E4M3 K/V with per-layer scales (kv_cache.h)
  bool async_scheduling = false;          // rollout.async_scheduling: schedule step t+1 while the device runs step t
  // rollout.shared_prefix_decode: a prompt's samples read its keys together in decode steps
  // (rollout/shared_prefix.h; CUDA decode kernel only): off, on, or by_size ("auto"): on for a
  // rollout whose shared prompt blocks outgrow the GPU's L2 (shared_prefix_pays), with prefix
  // caching on (without it the samples share no blocks).
  enum class SharedPrefixDecode { off, on, by_size };
  SharedPrefixDecode shared_prefix_decode = SharedPrefixDecode::by_size;
  // Mixed steps (sequences with one new token beside sequences with several) as two parts: the
  // one-token rows on the decode kernel, only the others' keys gathered (rollout/step_context.h).
  // 1.28-2.23x tokens/s for 1024 sequences on 256 slots (Qwen3-8B shape, H100). false: every
  // decoding sequence's context gathered per layer.
  bool split_mixed_steps = true;
  // CUDA graphs of decode steps captured once and kept across rollouts (rollout/decode_graphs.h);
  // false: captured per rollout and freed with its KV cache. Capturing costs 0.5-3% of a rollout
  // (Qwen3-8B shape, H100), the most keeping can save. Kept graphs hold their memory pool through
  // the trainer's update phase; in training (Qwen3-8B shape, FP8 LoRA, H200) the update's peak
  // and the allocator's reserved bytes were the same within 0.05 GiB either way, so on by default.
  bool keep_decode_graphs = true;
  double gpu_memory_utilization = 0.9;    // CUDA: fraction of device memory the process may reach
  int64_t num_blocks = 0;                 // > 0: exactly this many blocks (tests: force preemption)
  std::shared_ptr<const std::vector<std::string>> token_bytes;  // for stop strings (scheduler.h)
};

struct GenerateRequest {
  std::vector<TokenId> prompt;
  RequestParams params;     // n, max_new_tokens, stop token ids
  SamplingParams sampling;  // temperature, top-k, top-p, seed
};

// Wall-clock seconds of one sample, from the steps of its milestones.
struct SampleTimes {
  double queue = 0;    // added -> first scheduled
  double prefill = 0;  // first scheduled -> first token
  double decode = 0;   // first token -> last token
};

struct GenerateOutput {
  RequestOutput output;            // per sample: tokens, fp32 log-probs, finish reason; or the error
  std::vector<SampleTimes> times;  // by sample index
};

struct EngineStats {
  int64_t steps = 0;
  int64_t generated_tokens = 0;
  int64_t prefill_tokens_saved = 0;
  int64_t preemptions = 0;
  int64_t kv_blocks = 0;
  int64_t kv_bytes = 0;
  int64_t graph_steps = 0;       // decode steps replayed from a CUDA graph
  // Steps where sequences computing one new token (decodes; also a prompt cached but for its
  // last token) ran beside sequences computing several (a prefill or its chunk, a recompute):
  // eager; with split_mixed_steps the one-token rows on the decode kernel and the others over
  // their gathered keys (rollout/step_context.h), else every row over gathered keys. They happen once sequences are admitted while others decode: more
  // sequences than max_num_seqs, chunked prefill, or preemption.
  int64_t mixed_steps = 0;
  int64_t graphs_captured = 0;   // batch buckets captured in this rollout
  double graph_gpu_seconds = 0;  // GPU time inside the graph replays (the rest of their steps: host)
  double graph_capture_seconds = 0;  // wall time capturing this rollout's graphs (DecodeGraphs::capture_seconds)
  // Wall time of the steps not replayed from a graph (prefills, mixed steps, eager decodes), from
  // scheduling to their tokens on the host: what is left of `seconds` is the graph steps, so
  // their host work is (seconds - eager_step_seconds - graph_capture_seconds) / graph_steps less
  // their GPU time. Synchronous scheduling only (0 with async_scheduling, where steps overlap).
  double eager_step_seconds = 0;
  // Shared-prefix decode: key positions (per layer and KV head) read once for a chunk of
  // sequences instead of once each, summed over decode steps; 0 when it is off.
  int64_t shared_prefix_key_reads_saved = 0;
  // Layer calls whose K/V the q/k norm + RoPE kernel stored (FP8RL_FUSED_KV_STORE): eager
  // forwards and graph captures (a replay repeats its capture); 0 when it is off.
  int64_t fused_kv_stores = 0;
  double seconds = 0;
};

class Engine {
 public:
  // `model` must outlive the engine; it is only read.
  Engine(const model::CausalLM& model, EngineConfig config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // One rollout: every request to completion (or to its error), outputs in request order.
  std::vector<GenerateOutput> generate(const std::vector<GenerateRequest>& requests);
  const EngineStats& last_stats() const { return stats_; }
  const EngineConfig& config() const { return config_; }
  // Frees the decode graphs kept from earlier rollouts (their memory pool and input buffers);
  // the next rollout captures what it needs again.
  void drop_graphs();

 private:
  const model::CausalLM& model_;
  EngineConfig config_;
  EngineStats stats_;
  // The CUDA graphs of decode steps, kept across rollouts with what they read: the cache
  // directory and the attention they were captured with (rollout/decode_graphs.h).
  struct KeptGraphs;
  std::unique_ptr<KeptGraphs> kept_;
};

}  // namespace fp8rl::rollout
