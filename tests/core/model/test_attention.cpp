// Packed-token attention on the CPU: the per-sequence reference against the padded-mask one (two
// independent ways to attend over packed sequences), bottom-right causal alignment for queries
// over a cached prefix, gradients, and the packed model forward against one sequence at a time.
//
// Tolerance: float32 throughout, same softmax on the same numbers, only the op order differs
// (a masked row of a padded batch vs an unmasked causal call): a few ulp, so 1e-5 absolute on
// O(1) outputs; a wrong boundary or alignment moves outputs by O(0.1).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <stdexcept>
#include <vector>

#include "core/model/attention.h"
#include "core/model/decoder.h"
#include "core/model/random_checkpoint.h"
#include "tests/core/model/model_test_util.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::hf;
using namespace fp8rl::model;
using fp8rl::test::max_abs_diff;

namespace {

struct Qkv {
  at::Tensor q, k, v;
};

// Packed q [N, hq, d], k/v [N, hkv, d], normal(0, 1), seeded.
Qkv random_qkv(int64_t n, int64_t hq, int64_t hkv, int64_t d, uint64_t seed, bool grad = false) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto o = at::TensorOptions().dtype(at::kFloat);
  Qkv x{at::normal(0, 1, {n, hq, d}, g, o), at::normal(0, 1, {n, hkv, d}, g, o), at::normal(0, 1, {n, hkv, d}, g, o)};
  if (grad) {
    x.q.set_requires_grad(true);
    x.k.set_requires_grad(true);
    x.v.set_requires_grad(true);
  }
  return x;
}

int64_t total(const std::vector<int64_t>& lengths) {
  int64_t n = 0;
  for (int64_t l : lengths) n += l;
  return n;
}

}  // namespace

TEST_CASE("whole_sequences: boundaries, max length, empty sequences") {
  const std::vector<int64_t> lengths{3, 0, 5, 1};
  const AttentionContext ctx = whole_sequences(lengths, at::kCPU, nullptr);
  CHECK(ctx.cu_seqlens_q_host == std::vector<int64_t>{0, 3, 3, 8, 9});
  CHECK(ctx.cu_seqlens_k_host == ctx.cu_seqlens_q_host);
  CHECK(ctx.max_seqlen_q == 5);
  CHECK(ctx.num_sequences() == 4);
  CHECK(ctx.num_tokens() == 9);
  REQUIRE(ctx.cu_seqlens_q.scalar_type() == at::kInt);
  CHECK(ctx.cu_seqlens_q[3].item<int64_t>() == 8);
}

TEST_CASE("packed attention: per-sequence reference == padded mask, GQA and awkward lengths") {
  for (const auto& [hq, hkv] : {std::pair<int64_t, int64_t>{4, 4}, {6, 2}, {8, 1}}) {
    INFO("heads " << hq << "/" << hkv);
    const std::vector<int64_t> lengths{1, 17, 0, 5, 33};
    const Qkv x = random_qkv(total(lengths), hq, hkv, 8, 3);
    PaddedMaskAttention padded;
    VarlenAttention varlen;
    const AttentionContext ctx = whole_sequences(lengths, at::kCPU, &varlen);
    const at::Tensor ref = reference_varlen_attention(x.q, x.k, x.v, ctx);
    REQUIRE(ref.sizes() == x.q.sizes());
    CHECK(max_abs_diff(ref, padded.forward(x.q, x.k, x.v, ctx, 0)) < 1e-5);
    CHECK(max_abs_diff(ref, varlen.forward(x.q, x.k, x.v, ctx, 0)) == 0.0);  // the CPU path is the reference
    // A one-token sequence attends to itself only: its output is its own value (repeated for GQA).
    CHECK(max_abs_diff(ref[0], at::repeat_interleave(x.v[0], hq / hkv, 0)) < 1e-6);
  }
}

TEST_CASE("packed attention: sequences do not see each other") {
  const std::vector<int64_t> lengths{6, 4};
  Qkv x = random_qkv(10, 2, 2, 8, 5);
  VarlenAttention varlen;
  const AttentionContext ctx = whole_sequences(lengths, at::kCPU, &varlen);
  const at::Tensor before = varlen.forward(x.q, x.k, x.v, ctx, 0);
  x.k[2].add_(1.0);  // a key of sequence 0
  x.v[2].add_(1.0);
  const at::Tensor after = varlen.forward(x.q, x.k, x.v, ctx, 0);
  CHECK(max_abs_diff(before.narrow(0, 0, 2), after.narrow(0, 0, 2)) == 0.0);  // earlier tokens: causal
  CHECK(max_abs_diff(before.narrow(0, 2, 4), after.narrow(0, 2, 4)) > 1e-3);
  CHECK(max_abs_diff(before.narrow(0, 6, 4), after.narrow(0, 6, 4)) == 0.0);  // the other sequence
}

TEST_CASE("packed attention: queries over a cached prefix align bottom-right") {
  // Sequence 0 has 7 tokens of which the last 3 are new; sequence 1 has 4, all new. The new
  // queries must give the same rows as the whole sequences would.
  const Qkv whole = random_qkv(11, 4, 2, 8, 7);
  const AttentionContext full = whole_sequences(std::vector<int64_t>{7, 4}, at::kCPU, nullptr);
  const at::Tensor want = reference_varlen_attention(whole.q, whole.k, whole.v, full);
  AttentionContext ctx;
  ctx.cu_seqlens_q_host = {0, 3, 7};
  ctx.cu_seqlens_k_host = {0, 7, 11};
  ctx.max_seqlen_q = 4;
  ctx.max_seqlen_k = 7;
  const at::Tensor q_new = at::cat({whole.q.narrow(0, 4, 3), whole.q.narrow(0, 7, 4)}, 0);
  const at::Tensor got = reference_varlen_attention(q_new, whole.k, whole.v, ctx);
  CHECK(max_abs_diff(got, at::cat({want.narrow(0, 4, 3), want.narrow(0, 7, 4)}, 0)) < 1e-6);
}

TEST_CASE("packed attention: gradients of the reference equal the padded mask's") {
  const std::vector<int64_t> lengths{9, 1, 14};
  const Qkv a = random_qkv(24, 6, 2, 8, 11, true), b = random_qkv(24, 6, 2, 8, 11, true);
  const AttentionContext ctx = whole_sequences(lengths, at::kCPU, nullptr);
  PaddedMaskAttention padded;
  const at::Tensor w = at::linspace(-1, 1, 24 * 6 * 8).view({24, 6, 8});  // a loss that weighs every output
  (reference_varlen_attention(a.q, a.k, a.v, ctx) * w).sum().backward();
  (padded.forward(b.q, b.k, b.v, ctx, 0) * w).sum().backward();
  CHECK(max_abs_diff(a.q.grad(), b.q.grad()) < 1e-5);
  CHECK(max_abs_diff(a.k.grad(), b.k.grad()) < 1e-5);
  CHECK(max_abs_diff(a.v.grad(), b.v.grad()) < 1e-5);
}

TEST_CASE("packed forward: many sequences at once == each alone, and the stages compose to forward") {
  fp8rl::test::TempDir dir;
  write_random_checkpoint(dir.path().string(), "qwen3", fp8rl::test::tiny_shape(true), 21);
  LoadOptions o;
  o.dtype = at::kFloat;
  const CausalLM m = CausalLM::load(dir.path().string(), o);
  const std::vector<int64_t> lengths{5, 1, 12};
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(4);
  const at::Tensor ids = at::randint(97, {total(lengths)}, g, at::TensorOptions().dtype(at::kLong));
  std::vector<at::Tensor> pos;
  for (int64_t l : lengths) pos.push_back(at::arange(l, at::TensorOptions().dtype(at::kLong)));
  const at::Tensor positions = at::cat(pos);
  VarlenAttention varlen;
  const AttentionContext ctx = whole_sequences(lengths, at::kCPU, &varlen);
  const at::Tensor packed = m.forward(ids, positions, ctx);  // [N, H]
  REQUIRE(packed.sizes() == at::IntArrayRef({18, 48}));
  int64_t start = 0;
  for (int64_t l : lengths) {
    const at::Tensor alone = m.hidden_states(ids.narrow(0, start, l).unsqueeze(0))[0];  // [l, H]
    CHECK(max_abs_diff(packed.narrow(0, start, l), alone) < 1e-5);
    start += l;
  }
  // The public stages, called by hand, are the forward.
  const Rope r = m.rope(positions);
  at::Tensor x = m.embed(ids);
  for (int64_t i = 0; i < m.config().shape.num_hidden_layers; ++i) x = m.decoder_layer(i, x, r, ctx);
  CHECK(max_abs_diff(m.final_norm(x), packed) == 0.0);
  // The padded wrapper with a PaddedMaskAttention (the old path) gives the same logits.
  PaddedMaskAttention padded;
  ForwardOptions fo;
  fo.attention = &padded;
  const at::Tensor two = ids.narrow(0, 6, 12).view({2, 6});
  CHECK(max_abs_diff(m.logits(two, fo), m.logits(two)) < 1e-5);
  // Bad calls say what is wrong.
  REQUIRE_THROWS_CONTAINING(m.forward(ids.narrow(0, 0, 5), positions.narrow(0, 0, 5), ctx), std::logic_error,
                            "the context's sequences hold 18");
}
