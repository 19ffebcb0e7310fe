// VarlenAttention's CUDA path (ATen's flash-attention varlen kernel) against the float32
// per-sequence reference on the same BF16 inputs: forward and gradients, head_dim 64 and 128,
// GQA ratios 1, 4 and 8, lengths 1, 17, 1025, an empty sequence, and queries over a cached prefix.
//
// Tolerance: flash keeps q/k/v and the softmax probabilities in BF16 for its two matmuls (fp32
// accumulation) and rounds the output to BF16, the reference does everything in fp32. BF16 has
// 8 significant bits: each rounding moves a value by <= 2^-9 relative, and outputs are convex
// combinations of O(1) values, so the error measure 1 - 2*sum(xy)/sum(x^2+y^2) stays ~1e-5 and
// max |diff| ~1e-2; a wrong boundary, alignment or GQA head mapping gives O(0.1-1) and a measure
// above 1e-2. Gradients go through two more BF16 matmuls each: same measure, looser max.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <vector>

#include "core/model/attention.h"
#include "tests/core/model/model_test_util.h"

using namespace fp8rl;
using namespace fp8rl::hf;
using namespace fp8rl::model;
using fp8rl::test::max_abs_diff;

namespace {

// 1 - 2 sum(xy) / sum(x^2 + y^2): 0 when equal, scale-free (DeepGEMM's calc_diff).
double rel_error(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.detach().to(at::kDouble), y = b.detach().to(at::kDouble);
  const double den = (x * x + y * y).sum().item<double>();
  return den == 0 ? 0.0 : 1.0 - 2.0 * (x * y).sum().item<double>() / den;
}

struct Case {
  int64_t hq, hkv, d;
};

}  // namespace

TEST_CASE("flash varlen attention == fp32 reference: forward and gradients", "[model][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  const at::Device dev(at::kCUDA, 0);
  const std::vector<int64_t> lengths{1, 17, 0, 1025, 130};
  int64_t n = 0;
  for (int64_t l : lengths) n += l;
  for (const Case c : {Case{8, 8, 64}, Case{8, 2, 128}, Case{16, 2, 128}, Case{4, 1, 64}}) {
    INFO("hq " << c.hq << " hkv " << c.hkv << " head_dim " << c.d);
    at::manual_seed(c.hq * 1000 + c.d);
    const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(dev);
    const at::Tensor q = at::randn({n, c.hq, c.d}, bf16), k = at::randn({n, c.hkv, c.d}, bf16),
                     v = at::randn({n, c.hkv, c.d}, bf16), w = at::randn({n, c.hq, c.d}, bf16);
    VarlenAttention varlen;
    const AttentionContext ctx = whole_sequences(lengths, dev, &varlen);
    REQUIRE(VarlenAttention::uses_flash(q));

    const at::Tensor qa = q.clone().requires_grad_(), ka = k.clone().requires_grad_(), va = v.clone().requires_grad_();
    const at::Tensor got = varlen.forward(qa, ka, va, ctx, 0);
    (got.to(at::kFloat) * w.to(at::kFloat)).sum().backward();

    const at::Tensor qr = q.to(at::kFloat).requires_grad_(), kr = k.to(at::kFloat).requires_grad_(),
                     vr = v.to(at::kFloat).requires_grad_();
    const at::Tensor want = reference_varlen_attention(qr, kr, vr, ctx);
    (want * w.to(at::kFloat)).sum().backward();

    REQUIRE(got.sizes() == want.sizes());
    CHECK(rel_error(got, want) < 1e-4);
    CHECK(max_abs_diff(got, want) < 3e-2);
    for (const auto& [name, a, r] : {std::tuple{"dq", qa, qr}, std::tuple{"dk", ka, kr}, std::tuple{"dv", va, vr}}) {
      INFO(name << ": rel " << rel_error(a.grad(), r.grad()) << ", max " << max_abs_diff(a.grad(), r.grad()));
      CHECK(rel_error(a.grad(), r.grad()) < 1e-3);
    }
  }
}

TEST_CASE("flash varlen attention: queries over a cached prefix align bottom-right", "[model][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  const at::Device dev(at::kCUDA, 0);
  at::manual_seed(3);
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  // Keys: sequences of 300 and 17 tokens; new queries: their last 45 and 17 tokens.
  const at::Tensor k = at::randn({317, 2, 128}, bf16), v = at::randn({317, 2, 128}, bf16);
  const at::Tensor q = at::randn({62, 8, 128}, bf16);
  VarlenAttention varlen;
  AttentionContext ctx;
  ctx.attention = &varlen;
  ctx.cu_seqlens_q_host = {0, 45, 62};
  ctx.cu_seqlens_k_host = {0, 300, 317};
  ctx.max_seqlen_q = 45;
  ctx.max_seqlen_k = 300;
  auto dev_int = [&](const std::vector<int64_t>& x) { return at::tensor(x).to(at::kInt).to(dev); };
  ctx.cu_seqlens_q = dev_int(ctx.cu_seqlens_q_host);
  ctx.cu_seqlens_k = dev_int(ctx.cu_seqlens_k_host);
  const at::Tensor got = varlen.forward(q, k, v, ctx, 0);
  const at::Tensor want = reference_varlen_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), ctx);
  CHECK(rel_error(got, want) < 1e-4);
  CHECK(max_abs_diff(got, want) < 3e-2);
}

namespace {

// The context of sequences whose new queries are the last q_len[s] of their k_len[s] keys.
AttentionContext prefix_context(const std::vector<int64_t>& q_len, const std::vector<int64_t>& k_len, at::Device dev,
                                Attention* attention) {
  AttentionContext ctx;
  ctx.attention = attention;
  ctx.cu_seqlens_q_host = {0};
  ctx.cu_seqlens_k_host = {0};
  for (size_t s = 0; s < q_len.size(); ++s) {
    ctx.cu_seqlens_q_host.push_back(ctx.cu_seqlens_q_host.back() + q_len[s]);
    ctx.cu_seqlens_k_host.push_back(ctx.cu_seqlens_k_host.back() + k_len[s]);
    ctx.max_seqlen_q = std::max(ctx.max_seqlen_q, q_len[s]);
    ctx.max_seqlen_k = std::max(ctx.max_seqlen_k, k_len[s]);
  }
  auto dev_int = [&](const std::vector<int64_t>& x) { return at::tensor(x).to(at::kInt).to(dev); };
  ctx.cu_seqlens_q = dev_int(ctx.cu_seqlens_q_host);
  ctx.cu_seqlens_k = dev_int(ctx.cu_seqlens_k_host);
  return ctx;
}

bool hopper_device() {
  return at::cuda::is_available() && at::cuda::getCurrentDeviceProperties()->major == 9;
}

}  // namespace

// FlashInfer's sm90 prefill kernel (the engine's prefill on Hopper) against the float32
// per-sequence reference and against flash-attention 2 on the same BF16 inputs: lengths around
// its 128-query tiles (1, 17, 127, 128, 129, 1025), an empty sequence, queries over cached
// prefixes (bottom-right), one query over a long prefix, GQA groups 1, 4 and 8; a batch of 4500
// short sequences takes the plan's one-schedule-for-all-heads branch. Same tolerances as flash.
TEST_CASE("Hopper prefill attention == fp32 reference and flash-attention 2", "[model][gpu]") {
  if (!hopper_device()) SKIP_TEST("no Hopper GPU");
  // Optional at build time (scripts/setup.sh goes on without FlashInfer's headers): say so.
  if (!VarlenAttention::hopper_kernel_built()) SKIP_TEST("built without FlashInfer's headers (FP8RL_FLASHINFER_DIR)");
  const at::Device dev(at::kCUDA, 0);
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  struct Batch {
    const char* name;
    std::vector<int64_t> q_len, k_len;
  };
  std::vector<int64_t> many_q(4500), many_k(4500);
  for (size_t s = 0; s < many_q.size(); ++s) many_q[s] = many_k[s] = 1 + static_cast<int64_t>(s % 3);
  const std::vector<Batch> batches{
      {"whole sequences", {1, 17, 0, 127, 128, 129, 1025}, {1, 17, 0, 127, 128, 129, 1025}},
      {"cached prefixes", {45, 17, 1, 200, 129}, {300, 17, 2000, 713, 1000}},
      {"4500 short sequences", many_q, many_k},
  };
  for (const Case c : {Case{8, 8, 128}, Case{32, 8, 128}, Case{16, 2, 128}}) {
    for (const Batch& b : batches) {
      INFO(b.name << ", hq " << c.hq << " hkv " << c.hkv);
      VarlenAttention engine(/*inference_kernel=*/true), trainer;
      const AttentionContext ctx = prefix_context(b.q_len, b.k_len, dev, &engine);
      at::manual_seed(c.hq + static_cast<int64_t>(b.q_len.size()));
      const at::Tensor q = at::randn({ctx.num_tokens(), c.hq, c.d}, bf16);
      const at::Tensor k = at::randn({ctx.cu_seqlens_k_host.back(), c.hkv, c.d}, bf16);
      const at::Tensor v = at::randn({ctx.cu_seqlens_k_host.back(), c.hkv, c.d}, bf16);
      at::InferenceMode guard;
      REQUIRE(engine.uses_hopper(q, k, v));
      CHECK_FALSE(trainer.uses_hopper(q, k, v));
      const at::Tensor got = engine.forward(q, k, v, ctx, 0);
      REQUIRE(ctx.scratch);  // the plan, made on this first call
      const at::Tensor again = engine.forward(q, k, v, ctx, 1);  // a second layer reuses it
      const at::Tensor flash = trainer.forward(q, k, v, ctx, 0);
      const at::Tensor want = reference_varlen_attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), ctx);
      REQUIRE(got.sizes() == want.sizes());
      INFO("vs fp32: rel " << rel_error(got, want) << " max " << max_abs_diff(got, want) << "; vs flash: rel "
                           << rel_error(got, flash) << " max " << max_abs_diff(got, flash));
      CHECK(rel_error(got, want) < 1e-4);
      CHECK(max_abs_diff(got, want) < 3e-2);
      CHECK(rel_error(got, flash) < 1e-4);
      CHECK(at::equal(got, again));  // deterministic: each output tile is one CTA's
    }
  }
}

// The engine hands the kernel q/k/v as slices of the fused q/k/v projection's rows (row stride
// (Hq + 2 Hkv) D); the kernel reads them through their strides, bit for bit what it gives on
// contiguous copies. A view whose strides TMA cannot take (a row stride not a multiple of 8
// elements) is copied first, with the same result.
TEST_CASE("Hopper prefill attention reads strided q/k/v views as they are", "[model][gpu]") {
  if (!hopper_device()) SKIP_TEST("no Hopper GPU");
  if (!VarlenAttention::hopper_kernel_built()) SKIP_TEST("built without FlashInfer's headers (FP8RL_FLASHINFER_DIR)");
  const at::Device dev(at::kCUDA, 0);
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  const int64_t hq = 32, hkv = 8, d = 128;
  const std::vector<int64_t> lens{1, 129, 700};
  at::InferenceMode guard;
  for (const int64_t pad : {0, 8, 3}) {  // extra elements a row: 3 breaks TMA's 16-byte strides
    INFO("row padding " << pad);
    VarlenAttention engine(/*inference_kernel=*/true);
    const AttentionContext ctx = whole_sequences(lens, dev, &engine);
    at::manual_seed(7 + pad);
    const at::Tensor rows = at::randn({ctx.num_tokens(), (hq + 2 * hkv) * d + pad}, bf16);  // [N, qkv + pad]
    const at::Tensor q = rows.narrow(1, 0, hq * d).view({-1, hq, d});
    const at::Tensor k = rows.narrow(1, hq * d, hkv * d).view({-1, hkv, d});
    const at::Tensor v = rows.narrow(1, (hq + hkv) * d, hkv * d).view({-1, hkv, d});
    REQUIRE_FALSE(v.is_contiguous());
    REQUIRE(engine.uses_hopper(q, k, v));
    const at::Tensor got = engine.forward(q, k, v, ctx, 0);
    const at::Tensor want = engine.forward(q.contiguous(), k.contiguous(), v.contiguous(), ctx, 1);
    CHECK(got.is_contiguous());
    CHECK(at::equal(got, want));
  }
}

TEST_CASE("Hopper prefill attention: calls that need gradients stay on flash-attention 2", "[model][gpu]") {
  if (!hopper_device()) SKIP_TEST("no Hopper GPU");
  const at::Device dev(at::kCUDA, 0);
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  VarlenAttention engine(/*inference_kernel=*/true);
  const at::Tensor q = at::randn({64, 8, 128}, bf16).requires_grad_(), k = at::randn({64, 2, 128}, bf16),
                   v = at::randn({64, 2, 128}, bf16);
  CHECK_FALSE(engine.uses_hopper(q, k, v));
  const AttentionContext ctx = whole_sequences(std::vector<int64_t>{64}, dev, &engine);
  const at::Tensor out = engine.forward(q, k, v, ctx, 0);
  CHECK(out.requires_grad());
  CHECK_FALSE(ctx.scratch);
  {
    at::NoGradGuard no_grad;
    CHECK(engine.uses_hopper(q, k, v) == VarlenAttention::hopper_kernel_built());
  }
  // fp16 and head_dim 64 are not compiled in.
  at::InferenceMode guard;
  CHECK_FALSE(engine.uses_hopper(q.detach().to(at::kHalf), k.to(at::kHalf), v.to(at::kHalf)));
  CHECK_FALSE(engine.uses_hopper(q.detach().narrow(2, 0, 64), k.narrow(2, 0, 64), v.narrow(2, 0, 64)));
}
