#include "rollout/paged_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "core/model/layers.h"
#include "core/util/env.h"
#include "core/util/error.h"
#include "core/util/log.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "rollout/cuda/rollout_kernels.h"
#endif

namespace fp8rl::rollout {

#ifdef FP8RL_WITH_CUDA
namespace {
int sm_count() {
  static const int n = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return n;
}
// The prefix pass's splits fill the device for the fewest chunks the batch can have (B / M:
// every row shares), a shape-only choice like the first pass's; the partial slots of both passes
// are at most 64 (the merge's width). 0: no prefix pass.
// The first pass's split count: rounded down for an FP8 cache (fp8_kv_fewer_splits), up otherwise.
int64_t splits_for(int64_t batch, int64_t num_kv_heads, bool fp8_kv) {
  return cuda::paged_decode_splits(batch, num_kv_heads, sm_count(), fp8_kv && fp8_kv_fewer_splits());
}
int64_t prefix_splits_for(int64_t batch, int64_t num_kv_heads, int64_t members, bool fp8_kv) {
  if (members < 1) return 0;
  return std::min<int64_t>(splits_for((batch + members - 1) / members, num_kv_heads, fp8_kv),
                           64 - splits_for(batch, num_kv_heads, fp8_kv));
}
}  // namespace
#endif

namespace {
EnvToggle g_fp8_kv_half_mma("FP8RL_FP8_KV_HALF_MMA", true);
EnvToggle g_fused_kv_store("FP8RL_FUSED_KV_STORE", true);
EnvToggle g_fp8_kv_fewer_splits("FP8RL_FP8_KV_FEWER_SPLITS", true);
std::atomic<int> g_fp8_kv_stages_set{-1};  // set_fp8_kv_stages, or -1
}  // namespace

bool fp8_kv_half_mma() { return g_fp8_kv_half_mma.get(); }
void set_fp8_kv_half_mma(bool on) { g_fp8_kv_half_mma.set(on); }
bool fp8_kv_fewer_splits() { return g_fp8_kv_fewer_splits.get(); }
void set_fp8_kv_fewer_splits(bool on) { g_fp8_kv_fewer_splits.set(on); }
Fp8KvStages fp8_kv_stages() {
  const int set = g_fp8_kv_stages_set.load(std::memory_order_relaxed);
  if (set >= 0) return static_cast<Fp8KvStages>(set);
  // 0 two, 1 by_shape, 2 three: the enum's order. Read once; a bad value is a ConfigError.
  static const Fp8KvStages from_env =
      static_cast<Fp8KvStages>(env_int("FP8RL_FP8_KV_THREE_STAGES", 0, 2).value_or(static_cast<int>(Fp8KvStages::by_shape)));
  return from_env;
}
void set_fp8_kv_stages(Fp8KvStages stages) { g_fp8_kv_stages_set.store(static_cast<int>(stages), std::memory_order_relaxed); }
bool fp8_kv_three_stages_by_shape(int64_t batch, int64_t num_kv_heads, int64_t splits, int sm_count) {
  return splits == 1 && batch * num_kv_heads <= 4 * static_cast<int64_t>(sm_count);
}
bool fused_kv_store() { return g_fused_kv_store.get(); }
void set_fused_kv_store(bool on) { g_fused_kv_store.set(on); }

int64_t l2_cache_bytes() {
#ifdef FP8RL_WITH_CUDA
  return at::cuda::getCurrentDeviceProperties()->l2CacheSize;
#else
  return 0;
#endif
}

bool shared_prefix_pass_runs(int64_t batch, int64_t num_kv_heads, int32_t members) {
#ifdef FP8RL_WITH_CUDA
  // By the bf16 cache's split rule, which never gives fewer splits than the FP8 cache's: when it
  // leaves room for the prefix pass, so does the FP8 one. (The FP8 rule could leave room where
  // this one does not: then no chunk table is built and nothing is shared.)
  return batch > 0 && members >= 2 && prefix_splits_for(batch, num_kv_heads, members, false) > 0;
#else
  (void)batch;
  (void)num_kv_heads;
  (void)members;
  return false;
#endif
}

bool paged_decode_supported(at::ScalarType q_dtype, at::Device device, int64_t num_q_heads, const at::Tensor& k_cache) {
#ifdef FP8RL_WITH_CUDA
  const bool cache_ok = k_cache.scalar_type() == q_dtype || k_cache.scalar_type() == at::kByte;  // kByte: E4M3
  return device.is_cuda() && (q_dtype == at::kBFloat16 || q_dtype == at::kHalf) && cache_ok &&
         k_cache.dim() == 3 && num_q_heads % k_cache.size(1) == 0 &&
         cuda::paged_decode_supports(k_cache.size(2), num_q_heads / k_cache.size(1));
#else
  (void)q_dtype;
  (void)device;
  (void)num_q_heads;
  (void)k_cache;
  return false;
#endif
}

at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& context_lens, int64_t block_size,
                                  const at::Tensor& k_scale, const at::Tensor& v_scale,
                                  const at::Tensor& shared_prefix, void* const* cache_bases) {
  FP8RL_CHECK(q.dim() == 3 && paged_decode_supported(q.scalar_type(), q.device(), q.size(1), k_cache) &&
                  q.size(2) == k_cache.size(2),
              cat("paged_decode_attention: unsupported q ", q.sizes(), " ",
                                                      q.scalar_type(), " / cache ", k_cache.sizes()));
#ifdef FP8RL_WITH_CUDA
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k_cache.size(1);
  FP8RL_CHECK(block_tables.dim() == 2 && block_tables.size(0) == B && block_tables.scalar_type() == at::kInt &&
                  context_lens.dim() == 1 && context_lens.size(0) == B && context_lens.scalar_type() == at::kInt,
              "paged_decode_attention: block_tables [B, W] and context_lens [B] int32 expected");
  const at::Tensor qc = q.contiguous();
  const at::Tensor tables = block_tables.contiguous();
  at::Tensor out = at::empty_like(qc);
  const bool fp8_kv = k_cache.scalar_type() == at::kByte;
  const int64_t splits = splits_for(B, Hkv, fp8_kv);
  // Shared prefixes (shared_prefix_pass_runs says when the pass runs).
  int64_t members = 0, prefix_splits = 0;
  if (shared_prefix.defined()) {
    FP8RL_CHECK(shared_prefix.dim() == 2 && shared_prefix.size(0) == B && shared_prefix.size(1) >= 3 &&
                    shared_prefix.scalar_type() == at::kInt && shared_prefix.is_contiguous() &&
                    shared_prefix.device() == q.device(),
                "paged_decode_attention: shared_prefix must be a contiguous [B, M + 2] int32 tensor on q's device");
    members = shared_prefix.size(1) - 2;
    FP8RL_CHECK(members * (Hq / Hkv) <= 16, "paged_decode_attention: shared-prefix chunks of more than 16 query rows");
    prefix_splits = prefix_splits_for(B, Hkv, members, fp8_kv);
  }
  const bool shared = prefix_splits > 0;
  const int64_t slots = splits + prefix_splits;
  at::Tensor part_acc, part_ml;
  if (slots > 1) {
    const auto f32 = q.options().dtype(at::kFloat);
    part_acc = at::empty({B, Hq, slots, D}, f32);
    part_ml = at::empty({B, Hq, slots, 2}, f32);
  }
  cuda::PagedDecodeArgs a;
  a.q = qc.data_ptr();
  a.k_cache = k_cache.data_ptr();
  a.v_cache = v_cache.data_ptr();
  a.fp8_kv = fp8_kv;
  FP8RL_CHECK(!a.fp8_kv || (k_scale.defined() && v_scale.defined() && k_scale.scalar_type() == at::kFloat &&
                            v_scale.scalar_type() == at::kFloat),
              "paged_decode_attention: an FP8 cache needs its float32 k/v scales");
  a.k_scale = a.fp8_kv ? k_scale.data_ptr<float>() : nullptr;
  a.v_scale = a.fp8_kv ? v_scale.data_ptr<float>() : nullptr;
  a.block_tables = tables.data_ptr<int32_t>();
  a.table_stride = tables.size(1);
  a.context_lens = context_lens.data_ptr<int32_t>();
  a.out = out.data_ptr();
  a.part_acc = slots > 1 ? part_acc.data_ptr<float>() : nullptr;
  a.part_ml = slots > 1 ? part_ml.data_ptr<float>() : nullptr;
  a.chunks = shared ? shared_prefix.data_ptr<int32_t>() : nullptr;
  a.chunk_members = shared ? members : 0;
  a.prefix_splits = prefix_splits;
  a.batch = B;
  a.num_q_heads = Hq;
  a.num_kv_heads = Hkv;
  a.head_dim = D;
  a.block_size = block_size;
  a.splits = splits;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  a.bf16 = q.scalar_type() == at::kBFloat16;
  a.cache_bases = cache_bases;
  a.fp8_half_mma = a.fp8_kv && fp8_kv_half_mma();
  const Fp8KvStages stages = fp8_kv_stages();
  a.fp8_three_stages = a.fp8_kv && (stages == Fp8KvStages::three ||
                                    (stages == Fp8KvStages::by_shape &&
                                     fp8_kv_three_stages_by_shape(B, Hkv, splits, sm_count())));
  cuda::paged_decode_attention(a, at::cuda::getCurrentCUDAStream(q.device().index()).stream());
  return out;
#else
  (void)v_cache;
  (void)block_tables;
  (void)context_lens;
  (void)block_size;
  (void)shared_prefix;
  (void)cache_bases;
  return {};
#endif
}

bool PagedAttention::decode_kernel_applies(at::ScalarType q_dtype, int64_t num_q_heads) const {
  return use_decode_kernel_ && cache_->allocated() &&
         paged_decode_supported(q_dtype, cache_->shape().device, num_q_heads, cache_->k(0));
}

at::Tensor PagedAttention::forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const model::AttentionContext& ctx, int64_t layer) {
  FP8RL_CHECK(ctx.slot_mapping.defined(), "PagedAttention: context without KV slots");
  FP8RL_CHECK(ctx.slot_mapping.size(0) == q.size(0), "PagedAttention: one slot per new token");
  cache_->write(layer, ctx.slot_mapping, k, v);
  return attend_written(q, k, v, ctx, layer);
}

at::Tensor PagedAttention::forward_rotating(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const model::QkRotation& rotation, const model::AttentionContext& ctx,
                                            int64_t layer) {
  if (fused_kv_store() && cache_->allocated() && cache_->scales_set(layer) && ctx.slot_mapping.defined() &&
      ctx.slot_mapping.size(0) == q.size(0)) {
    const model::KvStoreTarget target{ctx.slot_mapping,       cache_->k(layer),       cache_->v(layer),
                                      cache_->k_scale(layer), cache_->v_scale(layer), cache_->bases(layer)};
    if (const auto qk = model::qk_norm_rope_store(q, k, v, rotation.q_weight, rotation.k_weight, rotation.eps,
                                                  rotation.cos, rotation.sin, target)) {
      ++fused_stores_;
      return attend_written(qk->first, qk->second, v, ctx, layer);
    }
  }
  return model::Attention::forward_rotating(q, k, v, rotation, ctx, layer);
}

at::Tensor PagedAttention::attend_written(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          const model::AttentionContext& ctx, int64_t layer) {
  if (!ctx.split) return attend(q, k, v, ctx, layer);
  // A mixed step: each part on its own path, the one-token sequences on the decode kernel
  // (reading the cache in place) and the others over their own gathered keys -- not everyone's.
  const model::SplitStep& split = *ctx.split;
  at::Tensor out = at::empty_like(q);  // [N, Hq, D]
  for (const auto& [rows, part] : {std::pair{&split.single_rows, &split.single}, std::pair{&split.multi_rows, &split.multi}}) {
    if (rows->numel() == 0) continue;
    const at::Tensor qp = q.index_select(0, *rows);
    const bool kernel = runs_decode_kernel(qp, *part, layer);  // the part's k/v are in the cache already
    out.index_copy_(0, *rows,
                    attend(qp, kernel ? at::Tensor() : k.index_select(0, *rows),
                           kernel ? at::Tensor() : v.index_select(0, *rows), *part, layer));
  }
  return out;
}

bool PagedAttention::runs_decode_kernel(const at::Tensor& q, const model::AttentionContext& ctx, int64_t layer) const {
  // A decode step: one new token per sequence (each sequence has at least one, so N == S means
  // exactly one each).
  const bool decode = ctx.block_tables.defined() && q.size(0) == ctx.block_tables.size(0);
  return decode && use_decode_kernel_ && paged_decode_supported(q.scalar_type(), q.device(), q.size(1), cache_->k(layer));
}

at::Tensor PagedAttention::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const model::AttentionContext& ctx, int64_t layer) {
  if (runs_decode_kernel(q, ctx, layer))
    return paged_decode_attention(q, cache_->k(layer), cache_->v(layer), ctx.block_tables, ctx.context_lens,
                                  cache_->shape().block_size, cache_->k_scale(layer), cache_->v_scale(layer),
                                  ctx.shared_prefix, cache_->bases(layer));
  // No cached prefix (every sequence's keys are its new tokens) and a cache in the model's dtype:
  // the gather would return the call's own k and v, bit for bit. (An FP8 cache keeps the gather:
  // prefill then attends over the dequantized K/V that later steps read.)
  const at::ScalarType cache_dtype = cache_->shape().dtype;
  if (!cache_->shape().fp8 && ctx.cu_seqlens_k_host == ctx.cu_seqlens_q_host && k.scalar_type() == cache_dtype &&
      v.scalar_type() == cache_dtype && q.scalar_type() == cache_dtype)
    return varlen_.forward(q, k, v, ctx, layer);
  FP8RL_CHECK(ctx.key_slots.defined(), "PagedAttention: the reference path needs the context's key_slots");
  auto [keys, values] = cache_->gather(layer, ctx.key_slots);  // [sum context_lens, Hkv, D], model dtype
  return varlen_.forward(q, keys.to(q.scalar_type()), values.to(q.scalar_type()), ctx, layer);
}

}  // namespace fp8rl::rollout
