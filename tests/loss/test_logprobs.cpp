// Chunked log-prob/entropy with a recomputing backward, against the full log_softmax and
// against plain loops.
#include <ATen/ATen.h>

#include <cmath>
#include <string>
#include <vector>

#include "loss/logprobs.h"
#include "tests/catch.h"
#include "tests/loss/loss_test_util.h"

using namespace fp8rl;
using namespace fp8rl::loss;
using fp8rl::test::check_close;
using fp8rl::test::check_grad;
using fp8rl::test::to_vec;

TEST_CASE("chunked logprobs/entropy: plain-loop reference", "[loss][logprobs]") {
  const int64_t T = 3, V = 5, H = 4;
  at::manual_seed(1);
  const at::Tensor h = at::randn({T, H}, at::kDouble), w = at::randn({V, H}, at::kDouble);
  const at::Tensor y = at::tensor(std::vector<int64_t>{4, 0, 2}, at::kLong);
  const double temp = 0.8;
  const auto hv = to_vec(h), wv = to_vec(w);
  std::vector<double> lp_ref, ent_ref;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> z(V);
    double zmax = -1e300;
    for (int64_t v = 0; v < V; ++v) {
      double acc = 0;
      for (int64_t k = 0; k < H; ++k) acc += hv[t * H + k] * wv[v * H + k];
      z[v] = acc / temp;
      zmax = std::max(zmax, z[v]);
    }
    double se = 0;
    for (double zv : z) se += std::exp(zv - zmax);
    const double lse = zmax + std::log(se);
    double ent = 0;
    for (double zv : z) ent -= std::exp(zv - lse) * (zv - lse);
    lp_ref.push_back(z[to_vec(y)[t]] - lse);
    ent_ref.push_back(ent);
  }
  for (int64_t chunk : {1, 2, 100}) {
    INFO("chunk " << chunk);
    const TokenLogprobs out = chunked_logprobs_entropy(h, w, y, chunk, temp);
    // Double, V = 5 terms: 1e-12.
    check_close(to_vec(out.logprobs), lp_ref, 1e-12, 1e-12, "logprobs");
    check_close(to_vec(out.entropy), ent_ref, 1e-12, 1e-12, "entropy");
  }
}

TEST_CASE("chunked logprobs/entropy equal the full computation, values and gradients", "[loss][logprobs]") {
  const int64_t V = 37, H = 8;
  for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    // Double: same math, different chunking of identical row GEMMs: 1e-12. Float32: logits
    // reach |z| ~ 15 here (H = 8 unit-variance products, / 0.6), and the entropy gradient
    // p * (log p + H) cancels terms of that size; with eps 6e-8 and reductions ordered
    // differently from autograd's over V = 37 classes and up to 33 tokens, ~3e-5 differences
    // are observed: 1e-4 (atol and rtol) is that with a margin, still far below any real bug.
    const double tol = dtype == at::kDouble ? 1e-12 : 1e-4;
    for (int64_t T : {1, 17, 33}) {
      for (int64_t chunk : {int64_t{1}, int64_t{7}, T + 5}) {
        for (double temp : {1.0, 0.6}) {
          INFO("dtype " << dtype << " T " << T << " chunk " << chunk << " temperature " << temp);
          at::manual_seed(T * 100 + chunk);
          const at::Tensor h0 = at::randn({T, H}, dtype), w0 = at::randn({V, H}, dtype);
          const at::Tensor y = at::randint(V, {T}, at::kLong);
          const at::Tensor g_lp = at::randn({T}, dtype), g_ent = at::randn({T}, dtype);
          const at::Tensor hc = h0.clone().requires_grad_(true), wc = w0.clone().requires_grad_(true);
          const at::Tensor hf = h0.clone().requires_grad_(true), wf = w0.clone().requires_grad_(true);
          const TokenLogprobs c = chunked_logprobs_entropy(hc, wc, y, chunk, temp);
          const TokenLogprobs f = full_logprobs_entropy(hf, wf, y, temp);
          CHECK(c.logprobs.scalar_type() == dtype);
          check_close(c.logprobs, f.logprobs, tol, tol, "logprobs");
          check_close(c.entropy, f.entropy, tol, tol, "entropy");
          ((c.logprobs * g_lp).sum() + (c.entropy * g_ent).sum()).backward();
          ((f.logprobs * g_lp).sum() + (f.entropy * g_ent).sum()).backward();
          check_close(hc.grad(), hf.grad(), tol, tol, "grad hidden");
          check_close(wc.grad(), wf.grad(), tol, tol, "grad weight");
        }
      }
    }
  }
}

TEST_CASE("chunked logprobs/entropy: finite-difference gradients in double", "[loss][logprobs]") {
  const int64_t T = 5, V = 6, H = 3;
  at::manual_seed(2);
  const at::Tensor h = at::randn({T, H}, at::kDouble), w = at::randn({V, H}, at::kDouble);
  const at::Tensor y = at::randint(V, {T}, at::kLong);
  const at::Tensor c1 = at::randn({T}, at::kDouble), c2 = at::randn({T}, at::kDouble);
  auto obj = [&](const TokenLogprobs& o) { return (o.logprobs * c1).sum() + (o.entropy * c2).sum(); };
  check_grad([&](const at::Tensor& x) { return obj(chunked_logprobs_entropy(x, w, y, 2, 0.7)); }, h, "hidden");
  check_grad([&](const at::Tensor& x) { return obj(chunked_logprobs_entropy(h, x, y, 2, 0.7)); }, w, "weight");
  // Only the log-probs used (entropy's incoming gradient is undefined/zero), weight frozen.
  check_grad([&](const at::Tensor& x) { return chunked_logprobs_entropy(x, w, y, 4).logprobs.sum(); }, h, "logprobs only");
  const at::Tensor hx = h.clone().requires_grad_(true);
  chunked_logprobs_entropy(hx, w, y, 3).entropy.sum().backward();
  CHECK(hx.grad().defined());
}

TEST_CASE("chunked logprobs: bfloat16 inputs and bad arguments", "[loss][logprobs]") {
  const int64_t T = 19, V = 50, H = 16;
  at::manual_seed(3);
  const at::Tensor h = at::randn({T, H}).to(at::kBFloat16).requires_grad_(true);
  const at::Tensor w = (0.3 * at::randn({V, H})).to(at::kBFloat16).requires_grad_(true);
  const at::Tensor y = at::randint(V, {T}, at::kLong);
  const TokenLogprobs c = chunked_logprobs_entropy(h, w, y, 4);
  CHECK(c.logprobs.scalar_type() == at::kFloat);
  // Reference: the same bf16 values in fp32. The chunked path rounds logits to bf16 (8 bits of
  // mantissa) before the fp32 softmax: |logit| <~ 8 here gives errors <~ 8 * 2^-8 = 0.03.
  const TokenLogprobs f = full_logprobs_entropy(h.detach().to(at::kFloat), w.detach().to(at::kFloat), y);
  check_close(c.logprobs, f.logprobs, 0.05, 0.01, "bf16 logprobs");
  check_close(c.entropy, f.entropy, 0.05, 0.01, "bf16 entropy");
  (c.logprobs.sum() + c.entropy.sum()).backward();
  CHECK(h.grad().scalar_type() == at::kBFloat16);
  CHECK(w.grad().scalar_type() == at::kBFloat16);
  CHECK(at::isfinite(w.grad()).all().item<bool>());

  CHECK_THROWS_AS(chunked_logprobs_entropy(h, w, y, 0), std::logic_error);
  CHECK_THROWS_AS(chunked_logprobs_entropy(h, w.to(at::kFloat), y, 4), std::logic_error);
  CHECK_THROWS_AS(chunked_logprobs_entropy(h, w, y.slice(0, 0, 3), 4), std::logic_error);
  CHECK(chunked_logprobs_entropy(h.slice(0, 0, 0), w, y.slice(0, 0, 0), 4).logprobs.numel() == 0);
}
