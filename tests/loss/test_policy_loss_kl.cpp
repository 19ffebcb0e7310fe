// PPO clipped surrogate (clip-higher, dual clip) and the KL estimators.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/util/error.h"
#include "loss/kl.h"
#include "loss/policy_loss.h"
#include "tests/catch.h"
#include "tests/loss/loss_test_util.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::loss;
using fp8rl::test::check_close;
using fp8rl::test::check_grad;
using fp8rl::test::from_vec;
using fp8rl::test::to_vec;

namespace {

struct PlainPpo {
  std::vector<double> loss;
  double clip_low = 0, clip_high = 0, clip_dual = 0, approx_kl = 0;
};

// Per-token PPO loss with plain loops, written from the formulas in the PPO/DAPO papers.
PlainPpo plain_ppo(const std::vector<double>& lp, const std::vector<double>& old, const std::vector<double>& adv_seq,
                   const std::vector<double>& mask, int64_t T, double low, double high, double c /*0 = off*/) {
  PlainPpo out;
  double n = 0;
  for (size_t i = 0; i < lp.size(); ++i) {
    const double a = adv_seq[i / static_cast<size_t>(T)];
    const double d = std::min(20.0, std::max(-20.0, lp[i] - old[i]));
    const double r = std::exp(d);
    const double l1 = -a * r, l2 = -a * std::min(1 + high, std::max(1 - low, r));
    double l = std::max(l1, l2);
    bool dual = false;
    if (c > 0 && a < 0) {
      dual = l > -a * c;
      l = std::min(l, -a * c);
    }
    out.loss.push_back(l);
    if (mask[i] != 0) {
      n += 1;
      out.clip_low += (l2 > l1 && a < 0);
      out.clip_high += (l2 > l1 && a > 0);
      out.clip_dual += dual;
      out.approx_kl += -d;
    }
  }
  out.clip_low /= n;
  out.clip_high /= n;
  out.clip_dual /= n;
  out.approx_kl /= n;
  return out;
}

}  // namespace

TEST_CASE("PPO loss: hand-computed example", "[loss][policy]") {
  // One sequence, four tokens, ratio = 1.5, 0.5, 1.1, 4; clip 0.2 / 0.28.
  const std::vector<double> ratio{1.5, 0.5, 1.1, 4.0};
  std::vector<double> lp, old(4, -1.0);
  for (double r : ratio) lp.push_back(-1.0 + std::log(r));
  PolicyLossOptions o;
  o.clip_ratio_low = 0.2;
  o.clip_ratio_high = 0.28;
  const at::Tensor mask = at::ones({1, 4}, at::kDouble);
  SECTION("A = +2: max(-2r, -2 clip(r)) = -2 min(r, 1.28) for r > 1, -2r below") {
    auto out = ppo_clip_loss(from_vec(lp, {1, 4}), from_vec(old, {1, 4}), from_vec({2.0}, {1}), mask, o);
    // exp(log(r)) round trip: 1e-12.
    check_close(to_vec(out.per_token_loss), {-2 * 1.28, -2 * 0.5, -2 * 1.1, -2 * 1.28}, 1e-12, 1e-12, "A>0");
    CHECK(out.metrics.clipfrac_high == 0.5);
    CHECK(out.metrics.clipfrac_low == 0.0);
  }
  SECTION("A = -1 with dual clip 3: min(max(r, clip(r)), 3)") {
    o.clip_ratio_c = 3.0;
    auto out = ppo_clip_loss(from_vec(lp, {1, 4}), from_vec(old, {1, 4}), from_vec({-1.0}, {1}), mask, o);
    check_close(to_vec(out.per_token_loss), {1.5, 0.8, 1.1, 3.0}, 1e-12, 1e-12, "A<0 dual");
    CHECK(out.metrics.clipfrac_low == 0.25);
    CHECK(out.metrics.clipfrac_dual == 0.25);
    // approx_kl = mean(old - lp) = -mean(log r)
    const double kl = -(std::log(1.5) + std::log(0.5) + std::log(1.1) + std::log(4.0)) / 4;
    CHECK(std::fabs(out.metrics.approx_kl - kl) < 1e-12);
  }
}

TEST_CASE("PPO loss matches a plain implementation and finite differences", "[loss][policy]") {
  const int64_t B = 5, T = 7;
  at::manual_seed(11);
  const at::Tensor old = at::randn({B, T}, at::kDouble) - 2;
  const at::Tensor lp = old + 0.4 * at::randn({B, T}, at::kDouble);
  const at::Tensor adv = at::randn({B}, at::kDouble);
  const at::Tensor mask = (at::rand({B, T}, at::kDouble) > 0.25).to(at::kDouble);
  for (double c : {0.0, 1.5}) {
    PolicyLossOptions o;
    o.clip_ratio_low = 0.2;
    o.clip_ratio_high = 0.28;
    if (c > 0) o.clip_ratio_c = c;
    INFO("clip_ratio_c " << c);
    auto out = ppo_clip_loss(lp, old, adv, mask, o);
    const PlainPpo ref = plain_ppo(to_vec(lp), to_vec(old), to_vec(adv), to_vec(mask), T, 0.2, 0.28, c);
    // Same math in double, exp/log evaluated once each: 1e-12.
    check_close(to_vec(out.per_token_loss), ref.loss, 1e-12, 1e-12, "loss");
    CHECK(std::fabs(out.metrics.clipfrac_low - ref.clip_low) < 1e-12);
    CHECK(std::fabs(out.metrics.clipfrac_high - ref.clip_high) < 1e-12);
    CHECK(std::fabs(out.metrics.clipfrac_dual - ref.clip_dual) < 1e-12);
    CHECK(std::fabs(out.metrics.approx_kl - ref.approx_kl) < 1e-12);
    // Gradient of the masked sum w.r.t. logp. Random inputs sit ~1e-3 or more from a clip
    // boundary almost surely, far beyond the 1e-6 FD step.
    check_grad([&](const at::Tensor& x) { return (ppo_clip_loss(x, old, adv, mask, o).per_token_loss * mask).sum(); },
               lp, "ppo");
  }
}

TEST_CASE("PPO loss: huge log-ratios stay finite, bad clips are config errors", "[loss][policy]") {
  const at::Tensor lp = from_vec({0.0, -1e4, -1e30, 0.0}, {2, 2});
  const at::Tensor old = from_vec({-1e4, 0.0, 0.0, -1e30}, {2, 2});
  PolicyLossOptions o;
  o.clip_ratio_c = 3.0;
  for (double a : {1.0, -1.0}) {
    auto out = ppo_clip_loss(lp.to(at::kFloat), old.to(at::kFloat), from_vec({a, a}, {2}).to(at::kFloat),
                             at::ones({2, 2}), o);
    CHECK(at::isfinite(out.per_token_loss).all().item<bool>());
  }
  o.clip_ratio_c = 0.9;
  REQUIRE_THROWS_CONTAINING(ppo_clip_loss(lp, old, from_vec({1, 1}, {2}), at::ones({2, 2}), o), ConfigError,
                            "clip_ratio_c");
  PolicyLossOptions bad;
  bad.clip_ratio_low = 1.0;
  REQUIRE_THROWS_CONTAINING(ppo_clip_loss(lp, old, from_vec({1, 1}, {2}), at::ones({2, 2}), bad), ConfigError,
                            "clip_ratio_low");
  CHECK_THROWS_AS(ppo_clip_loss(lp, old, from_vec({1, 1, 1}, {3}), at::ones({2, 2}), PolicyLossOptions{}),
                  std::logic_error);
}

TEST_CASE("KL estimators: hand values, plain implementation, gradients, clamping", "[loss][kl]") {
  // logp - ref = d: k1 = d, k2 = d^2/2, k3 = exp(-d) + d - 1.
  const std::vector<double> lp{-1.0, -2.0, -0.5}, ref{-1.5, -1.0, -0.5};
  const at::Tensor tl = from_vec(lp, {1, 3}), tr = from_vec(ref, {1, 3});
  check_close(to_vec(kl_penalty(tl, tr, KlType::k1)), {0.5, -1.0, 0.0}, 1e-15, 0, "k1");
  check_close(to_vec(kl_penalty(tl, tr, KlType::k2)), {0.125, 0.5, 0.0}, 1e-15, 0, "k2");
  check_close(to_vec(kl_penalty(tl, tr, KlType::k3)), {std::exp(-0.5) + 0.5 - 1, std::exp(1.0) - 1 - 1, 0.0}, 1e-15,
              1e-15, "k3");
  CHECK(parse_kl_type("low_var_kl") == KlType::k3);
  CHECK(parse_kl_type("mse") == KlType::k2);
  REQUIRE_THROWS_CONTAINING(parse_kl_type("k4"), ConfigError, "k1 (kl), k2 (mse), k3 (low_var_kl)");

  at::manual_seed(5);
  const at::Tensor a = at::randn({3, 6}, at::kDouble) - 1, b = at::randn({3, 6}, at::kDouble) - 1;
  std::vector<double> k1, k2, k3;
  for (size_t i = 0; i < 18; ++i) {
    const double d = to_vec(a)[i] - to_vec(b)[i];
    k1.push_back(d);
    k2.push_back(0.5 * d * d);
    k3.push_back(std::min(10.0, std::exp(-d) + d - 1));
  }
  check_close(to_vec(kl_penalty(a, b, KlType::k1)), k1, 1e-14, 1e-14, "k1 plain");
  check_close(to_vec(kl_penalty(a, b, KlType::k2)), k2, 1e-14, 1e-14, "k2 plain");
  check_close(to_vec(kl_penalty(a, b, KlType::k3)), k3, 1e-14, 1e-14, "k3 plain");
  for (KlType t : {KlType::k1, KlType::k2, KlType::k3}) {
    check_grad([&](const at::Tensor& x) { return kl_penalty(x, b, t).sum(); }, a, "kl");
  }
  // The reference gives a sampled token probability ~0: k3 would be exp(1e4); it is clamped to 10.
  const at::Tensor huge = kl_penalty(from_vec({-1e4, 0.0}, {1, 2}).to(at::kFloat),
                                     from_vec({0.0, -1e4}, {1, 2}).to(at::kFloat), KlType::k3);
  check_close(to_vec(huge), {10.0, 10.0}, 0, 0, "k3 clamp");
}
