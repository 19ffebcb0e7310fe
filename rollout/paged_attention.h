// The engine's Attention: each call first writes its new tokens' K/V into the KV cache
// (ctx.slot_mapping), then attends every new query over its sequence's cached keys -- the
// scheduler's contract (rollout/scheduler.h): all of a call's K/V is written before any query
// reads the cache, layer by layer, so a prefix block filled and shared in the same step is read
// correctly.
//
// Reference path (this file): the keys are gathered from the cache (ctx.key_slots) into a
// packed [sum context_lens, Hkv, D] and handed to whole-sequence attention with queries aligned
// bottom-right (core/model/attention.h): flash-attention varlen on CUDA, per-sequence SDPA on the
// CPU. Correct on both, and the reference a block-table kernel (FlashInfer or our own; the speed
// issue) is tested against. Inference only: the engine runs under at::InferenceMode.
#pragma once

#include "core/model/attention.h"
#include "rollout/kv_cache.h"

namespace fp8rl::rollout {

class PagedAttention final : public model::Attention {
 public:
  explicit PagedAttention(KvCache& cache) : cache_(cache) {}
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const model::AttentionContext& ctx,
                     int64_t layer) override;

 private:
  KvCache& cache_;
  model::VarlenAttention varlen_;
};

}  // namespace fp8rl::rollout
