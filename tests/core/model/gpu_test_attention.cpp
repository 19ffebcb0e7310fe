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
#include <ATen/cuda/CUDAContext.h>

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
