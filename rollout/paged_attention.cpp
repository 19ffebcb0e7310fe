#include "rollout/paged_attention.h"

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::rollout {

at::Tensor PagedAttention::forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const model::AttentionContext& ctx, int64_t layer) {
  FP8RL_CHECK(ctx.slot_mapping.defined() && ctx.key_slots.defined(), "PagedAttention: context without KV slots");
  FP8RL_CHECK(ctx.slot_mapping.size(0) == q.size(0), "PagedAttention: one slot per new token");
  cache_.write(layer, ctx.slot_mapping, k, v);
  auto [keys, values] = cache_.gather(layer, ctx.key_slots);  // [sum context_lens, Hkv, D]
  return varlen_.forward(q, keys.to(q.scalar_type()), values.to(q.scalar_type()), ctx, layer);
}

}  // namespace fp8rl::rollout
