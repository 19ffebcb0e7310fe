// rollout/step_context.h on the CPU: what each kind of step's context holds, and a mixed step's
// split giving the attention of the unsplit step (the GPU test runs its one-token part on the
// decode kernel).
#include <cstdint>
#include <vector>

#include "core/model/layers.h"
#include "rollout/paged_attention.h"
#include "rollout/step_context.h"
#include "tests/catch.h"
#include "tests/rollout/mixed_step_case.h"

using namespace fp8rl;
using namespace fp8rl::rollout;

namespace {
std::vector<int64_t> longs(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}
}  // namespace

TEST_CASE("step context: a mixed step splits into its one-token and its multi-token sequences", "[rollout][step_context]") {
  const StepPlan plan = test::mixed_step_plan();
  StepContextOptions o;
  o.decode_kernel = true;
  const model::AttentionContext ctx = step_context(plan, 4, at::kCPU, nullptr, o);
  CHECK(longs(ctx.slot_mapping) == plan.slot_mapping);
  CHECK(ctx.cu_seqlens_k_host == plan.cu_seqlens_k);
  CHECK(!ctx.key_slots.defined());  // each part carries its own
  REQUIRE(ctx.split);
  const model::SplitStep& s = *ctx.split;
  CHECK(longs(s.single_rows) == std::vector<int64_t>{0, 4});
  CHECK(longs(s.multi_rows) == std::vector<int64_t>{1, 2, 3, 5, 6});
  CHECK(s.single.cu_seqlens_q_host == std::vector<int64_t>{0, 1, 2});
  CHECK(s.single.cu_seqlens_k_host == std::vector<int64_t>{0, 6, 7});
  CHECK(longs(s.single.context_lens) == std::vector<int64_t>{6, 1});
  CHECK(longs(s.single.block_tables.flatten()) == std::vector<int64_t>{0, 1, 4, kPadBlock});
  CHECK(!s.single.key_slots.defined());  // the decode kernel reads block tables
  CHECK(s.multi.cu_seqlens_q_host == std::vector<int64_t>{0, 3, 5});
  CHECK(s.multi.cu_seqlens_k_host == std::vector<int64_t>{0, 7, 9});
  CHECK(s.multi.max_seqlen_q == 3);
  CHECK(s.multi.max_seqlen_k == 7);
  CHECK(longs(s.multi.key_slots) == std::vector<int64_t>{8, 9, 10, 11, 12, 13, 14, 20, 21});

  o.decode_kernel = false;  // the one-token part on gathered keys
  const model::AttentionContext ref = step_context(plan, 4, at::kCPU, nullptr, o);
  CHECK(longs(ref.split->single.key_slots) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 16});
  o.split_mixed = false;
  const model::AttentionContext whole = step_context(plan, 4, at::kCPU, nullptr, o);
  CHECK(!whole.split);
  CHECK(whole.key_slots.numel() == 16);
}

TEST_CASE("step context: decode steps need key slots only off the decode kernel, prefills always", "[rollout][step_context]") {
  StepPlan decode = test::mixed_step_plan();  // s0 and s2 alone
  decode.seqs = {decode.seqs[0], decode.seqs[2]};
  decode.input_ids = {1, 5};
  decode.positions = {5, 0};
  decode.slot_mapping = {5, 16};
  decode.cu_seqlens_q = {0, 1, 2};
  decode.cu_seqlens_k = {0, 6, 7};
  decode.context_lens = {6, 1};
  decode.block_tables = {0, 1, 4, kPadBlock};
  StepContextOptions o;
  o.decode_kernel = true;
  const model::AttentionContext on_kernel = step_context(decode, 4, at::kCPU, nullptr, o);
  CHECK(!on_kernel.split);
  CHECK(!on_kernel.key_slots.defined());
  CHECK(on_kernel.block_tables.sizes() == at::IntArrayRef({2, 2}));
  o.decode_kernel = false;
  CHECK(longs(step_context(decode, 4, at::kCPU, nullptr, o).key_slots) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 16});
}

TEST_CASE("step context: a split mixed step attends exactly as the unsplit one", "[rollout][step_context]") {
  for (const bool fp8 : {false, true}) {
    INFO("fp8 KV " << fp8);
    const auto [whole, split] = test::mixed_step_outputs(at::kCPU, at::kFloat, fp8, /*decode_kernel=*/false);
    REQUIRE(whole.sizes() == split.sizes());
    // Per-sequence SDPA over the same keys either way: the same arithmetic.
    CHECK(at::allclose(whole, split, 1e-6, 1e-6));
    CHECK(whole.abs().sum().item<double>() > 0);
  }
}

// The decoder calls Attention::forward_rotating (core/model/attention.h) with q and k as the
// projection made them. PagedAttention's, fused K/V store on or off, must equal the rotation
// (qk_norm_rope) followed by forward(): the same output and the same cache. On the CPU the store's
// kernel never applies, so this pins the fallback; the GPU test pins the kernel's bytes.
TEST_CASE("paged attention: forward_rotating equals the rotation, then forward", "[rollout][step_context]") {
  const bool was = fused_kv_store();
  for (const bool fused : {false, true})
    for (const bool fp8 : {false, true}) {
      INFO("fused K/V store " << fused << ", fp8 KV " << fp8);
      set_fused_kv_store(fused);
      const int64_t Hq = 6, Hkv = 2, D = 64, block_size = 4;
      const KvCacheShape shape{1, Hkv, D, block_size, at::kFloat, at::kCPU, fp8};
      KvCache want_cache(shape, 8), got_cache(shape, 8);
      PagedAttention want_attn(want_cache, false), got_attn(got_cache, false);
      at::manual_seed(4);
      const at::Tensor q = at::randn({7, Hq, D}), k = at::randn({7, Hkv, D}), v = at::randn({7, Hkv, D});
      model::QkRotation rot;
      rot.q_weight = at::rand({D}) + 0.5;
      rot.k_weight = at::rand({D}) + 0.5;
      rot.eps = 1e-6;
      rot.cos = at::rand({7, D});
      rot.sin = at::rand({7, D});
      const StepPlan plan = test::mixed_step_plan();
      const model::AttentionContext ctx = step_context(plan, block_size, at::kCPU, &want_attn, StepContextOptions{});
      const auto [qr, kr] = model::qk_norm_rope(q, k, rot.q_weight, rot.k_weight, rot.eps, rot.cos, rot.sin);
      const at::Tensor want = want_attn.forward(qr, kr, v, ctx, 0);
      const at::Tensor got = got_attn.forward_rotating(q, k, v, rot, ctx, 0);
      CHECK(at::equal(got, want));
      CHECK(at::equal(got_cache.k(0), want_cache.k(0)));
      CHECK(at::equal(got_cache.v(0), want_cache.v(0)));
    }
  set_fused_kv_store(was);
}
