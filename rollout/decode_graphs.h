// CUDA graphs of the engine's decode steps. A decode step of a small model is hundreds of small
// kernels (per layer: norms, RoPE, projections with their activation quantization, the KV write,
// attention, the MLP); launched one by one from the host, the launches, not the GPU, set the step
// time (docs/BENCHMARKS.md: ~22 ms per step at any batch before this). A graph replays the whole
// forward + lm_head with one launch.
//
// What a graph captures is fixed: tensor addresses and launch shapes. So:
//   - inputs live in static buffers (ids, positions, KV slots, block tables, context lengths, and
//     with shared-prefix decode the chunk table of rollout/shared_prefix.h), filled before each
//     replay; a step of S sequences replays the graph of the smallest batch
//     bucket >= S, its extra rows padded with a harmless sequence (one key, in a slot of its own
//     that no real sequence uses: `pad_slot`);
//   - attention is the paged decode kernel (rollout/paged_attention.h), whose launch shape
//     depends on the batch size only and which reads context lengths and block tables from
//     device memory;
//   - the weights are read where they are: LoRA adapters and re-quantized FP8 weights are updated
//     in place, never reallocated, during a training step.
//   - the KV cache is read through a KvDirectory (rollout/kv_cache.h): the cache is allocated
//     when a rollout starts and freed when it ends (the update phase needs the memory), so the
//     captured KV writes and decode kernels read the cache's addresses (and FP8 scales) from
//     that fixed table, which each rollout's cache fills.
// So the Engine may keep this object across rollouts (EngineConfig::keep_decode_graphs; else it
// makes one per rollout, freed before the cache), and graphs are captured lazily, once per
// bucket: capturing costs about two eager steps per bucket. Between rollouts the weights change
// in place, the pad slot may move (set_pad_slot), and the inputs are refilled every step.
// One condition stays with the caller: a rollout's first forward is eager, never a replay, since
// eager forwards do the per-rollout work a replay skips (LoRA's inference copies refreshed after
// an update, trainer/lora.h; an FP8 cache's scales set by its first write).
//
// CUDA builds only: elsewhere the constructor throws (the engine never makes one on the CPU).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/model/decoder.h"
#include "rollout/scheduler.h"

namespace fp8rl::rollout {

class DecodeGraphs {
 public:
  // `attention` runs the decode kernel for these shapes (PagedAttention::decode_kernel_applies).
  // max_batch: most sequences in one step; max_blocks: block-table width (blocks of the longest
  // sequence); pad_slot: a cache slot reserved for padding rows, in block pad_slot / block_size;
  // prefix_members > 0: decode steps read shared prefixes in chunks of that many sequences
  // (rollout/shared_prefix.h; the attention must be the engine's PagedAttention).
  DecodeGraphs(const model::CausalLM& model, model::Attention* attention, int64_t max_batch, int64_t max_blocks,
               int64_t block_size, int64_t pad_slot, int32_t prefix_members = 0);
  ~DecodeGraphs();
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  // Whether run() takes this plan: a decode step (one new token per sequence, all sampling) of at
  // most max_batch sequences whose block tables fit.
  bool takes(const StepPlan& plan) const;
  // Whether these graphs serve a rollout of this shape (else the engine makes new ones).
  bool fits(int64_t max_batch, int64_t max_blocks, int32_t prefix_members) const;
  // The padding rows' slot for the next replays (a new rollout's cache: its reserved block).
  void set_pad_slot(int64_t pad_slot);
  // Logits [S, V] of a decode step (S = plan.seqs.size()), in the model dtype: a view of the
  // graph's output, valid until the next run(). `patch_ids`, if set, runs on the device input ids
  // [S] (int64) after they are copied in and before the replay: async scheduling puts the
  // tokens of the step in flight there (plan ids kPendingToken go over as 0).
  at::Tensor run(const StepPlan& plan, const std::function<void(const at::Tensor&)>& patch_ids = {});

  int64_t graphs_captured() const;
  // Bytes the graphs' memory pool holds without a live tensor in them: reserved for the graphs'
  // replays, so no other allocation can use them, yet not in the allocator's allocated bytes. A
  // KV cache sized while these graphs are kept must count them as used.
  int64_t pool_idle_bytes() const;
  // Shared-prefix decode: key positions read once per chunk instead of once per sequence, summed
  // over the replays (rollout/shared_prefix.h); 0 without it.
  int64_t shared_prefix_key_reads_saved() const;
  // GPU time spent inside replays so far (CUDA events around each replay; waits for the last two).
  // Against the wall time of the steps it says how much of a decode step is host work.
  double replay_gpu_seconds();
  // Wall time spent capturing so far (each bucket's eager step, its capture and the syncs around
  // them): what a rollout pays for graphs it does not keep (EngineConfig::keep_decode_graphs).
  double capture_seconds() const;
  static std::vector<int64_t> buckets(int64_t max_batch);  // batch sizes graphs are made for

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp8rl::rollout
