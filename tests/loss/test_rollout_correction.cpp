// Rollout correction: token/sequence TIS, masked IS, and the mismatch metrics.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/util/error.h"
#include "loss/policy_loss.h"
#include "loss/rollout_correction.h"
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

struct PlainRc {
  std::vector<double> weight, mask;
  MismatchMetrics m;
};

// Loops over sequences and tokens, written from the definitions in rollout_correction.h.
PlainRc plain_rc(const std::vector<double>& old, const std::vector<double>& roll, const std::vector<double>& mask,
                 size_t B, size_t T, const std::string& level, const std::string& mode, double cap, double lower) {
  auto clampd = [](double x) { return std::min(20.0, std::max(-20.0, x)); };
  PlainRc out;
  out.weight.assign(B * T, 1.0);
  out.mask = mask;
  std::vector<double> units;       // raw ratio of each valid unit
  std::vector<bool> unit_corr;
  double n_tok = 0, k1 = 0, k3 = 0, amax = 0, asum = 0;
  for (size_t b = 0; b < B; ++b) {
    double seq_lr = 0;
    bool any = false;
    for (size_t t = 0; t < T; ++t) {
      const size_t i = b * T + t;
      if (mask[i] == 0) continue;
      any = true;
      const double d = old[i] - roll[i], ld = clampd(d);
      n_tok += 1;
      k1 += -d;
      k3 += std::exp(ld) - 1 - ld;
      amax = std::max(amax, std::fabs(d));
      asum += std::fabs(d);
      seq_lr += d;  // the product of the true ratios: only the sum is clamped (verl)
      if (level != "sequence") {
        const double r = std::exp(ld);
        units.push_back(r);
        if (level == "token" && mode == "truncate") {
          out.weight[i] = std::min(r, cap);
          unit_corr.push_back(r > cap);
        } else if (level == "token") {
          const bool keep = r >= lower && r <= cap;
          if (!keep) out.mask[i] = 0;
          unit_corr.push_back(!keep);
        } else {
          unit_corr.push_back(false);
        }
      }
    }
    if (level == "sequence" && any) {
      const double r = std::exp(clampd(seq_lr));
      units.push_back(r);
      const bool keep = r >= lower && r <= cap;
      unit_corr.push_back(mode == "truncate" ? r > cap : !keep);
      for (size_t t = 0; t < T; ++t) {
        if (mode == "truncate") out.weight[b * T + t] = std::min(r, cap);
        else if (!keep) out.mask[b * T + t] = 0;
      }
    }
  }
  MismatchMetrics& m = out.m;
  m.num_units = static_cast<int64_t>(units.size());
  m.kl_k1 = k1 / n_tok;
  m.kl_k3 = k3 / n_tok;
  m.abs_diff_max = amax;
  m.abs_diff_mean = asum / n_tok;
  double s = 0, s2 = 0, corr = 0;
  m.is_weight_min = units[0];
  m.is_weight_max = units[0];
  for (size_t u = 0; u < units.size(); ++u) {
    s += units[u];
    s2 += units[u] * units[u];
    corr += unit_corr[u];
    m.is_weight_min = std::min(m.is_weight_min, units[u]);
    m.is_weight_max = std::max(m.is_weight_max, units[u]);
  }
  const double n = static_cast<double>(units.size());
  m.is_weight_mean = s / n;
  m.frac_corrected = corr / n;
  m.ess = s * s / (n * s2);
  return out;
}

void check_metrics(const MismatchMetrics& got, const MismatchMetrics& ref, double tol) {
  CHECK(got.num_units == ref.num_units);
  check_close({got.kl_k1, got.kl_k3, got.abs_diff_max, got.abs_diff_mean, got.is_weight_mean, got.is_weight_min,
               got.is_weight_max, got.frac_corrected, got.ess},
              {ref.kl_k1, ref.kl_k3, ref.abs_diff_max, ref.abs_diff_mean, ref.is_weight_mean, ref.is_weight_min,
               ref.is_weight_max, ref.frac_corrected, ref.ess},
              tol, tol, "metrics");
}

}  // namespace

TEST_CASE("token TIS: hand-computed example", "[loss][tis]") {
  // log-ratios old - rollout: log 3, log 0.5, 0, (padding) -> weights min(r, 2) = 2, 0.5, 1, -
  const std::vector<double> roll{-1, -1, -1, 0};
  const std::vector<double> old{-1 + std::log(3.0), -1 + std::log(0.5), -1, 123.0};
  const at::Tensor mask = from_vec({1, 1, 1, 0}, {1, 4});
  RolloutCorrectionOptions o;
  o.cap = 2.0;
  auto rc = rollout_correction(from_vec(old, {1, 4}), from_vec(roll, {1, 4}), mask, o);
  check_close({to_vec(rc.weight)[0], to_vec(rc.weight)[1], to_vec(rc.weight)[2]}, {2.0, 0.5, 1.0}, 1e-12, 1e-12, "w");
  CHECK(rc.metrics.num_units == 3);
  CHECK(std::fabs(rc.metrics.frac_corrected - 1.0 / 3) < 1e-12);
  CHECK(std::fabs(rc.metrics.is_weight_max - 3.0) < 1e-12);
  CHECK(std::fabs(rc.metrics.is_weight_min - 0.5) < 1e-12);
  // ESS of raw ratios {3, 0.5, 1}: 4.5^2 / (3 * 10.25)
  CHECK(std::fabs(rc.metrics.ess - 4.5 * 4.5 / (3 * 10.25)) < 1e-12);
  CHECK(std::fabs(rc.metrics.kl_k1 - (-(std::log(3.0) + std::log(0.5)) / 3)) < 1e-12);
  // Sequence level: product 3 * 0.5 * 1 = 1.5 < cap, every token gets 1.5.
  o.level = TisLevel::sequence;
  rc = rollout_correction(from_vec(old, {1, 4}), from_vec(roll, {1, 4}), mask, o);
  check_close({to_vec(rc.weight)[0], to_vec(rc.weight)[2]}, {1.5, 1.5}, 1e-12, 1e-12, "seq w");
  // Masked, token level, kept range [0.6, 2]: tokens 0 (3) and 1 (0.5) are dropped.
  o.level = TisLevel::token;
  o.mode = TisMode::mask;
  o.mask_lower = 0.6;
  rc = rollout_correction(from_vec(old, {1, 4}), from_vec(roll, {1, 4}), mask, o);
  check_close(to_vec(rc.mask), {0, 0, 1, 0}, 0, 0, "token mask");
  check_close(to_vec(rc.weight), {1, 1, 1, 1}, 0, 0, "mask-mode weight");
  CHECK(std::fabs(rc.metrics.frac_corrected - 2.0 / 3) < 1e-12);
}

TEST_CASE("sequence TIS clamps the summed log-ratio, not each token's (verl)", "[loss][tis]") {
  // Issue 15: clamping every token to +-20 before summing changes the product of the ratios.
  // Sequence 0: log-ratios +25, -24 -> product e^1 (per-token clamping gave e^0 = 1).
  // Sequence 1: log-ratios -25, +3 -> sum -22 -> clamped to -20 as verl does -> e^-20 ~ 2.1e-9
  // (per-token clamping gave e^(-20 + 3) = e^-17).
  const at::Tensor roll = at::zeros({2, 2}, at::kDouble);
  const at::Tensor old = from_vec({25, -24, -25, 3}, {2, 2});
  const at::Tensor mask = at::ones({2, 2}, at::kDouble);
  RolloutCorrectionOptions o;
  o.level = TisLevel::sequence;
  o.cap = 2.0;
  auto rc = rollout_correction(old, roll, mask, o);
  // Truncate: min(e, 2) = 2 for both tokens of sequence 0; e^-20 for sequence 1. Double: 1e-12 relative.
  check_close(to_vec(rc.weight), {2.0, 2.0, std::exp(-20.0), std::exp(-20.0)}, 0, 1e-12, "seq weight");
  CHECK(std::fabs(std::exp(-20.0) - 2.06e-9) < 0.01e-9);
  CHECK(rc.metrics.num_units == 2);
  CHECK(std::fabs(rc.metrics.is_weight_max - std::exp(1.0)) < 1e-12);  // raw, untruncated
  CHECK(std::fabs(rc.metrics.is_weight_min - std::exp(-20.0)) < 1e-21);
  CHECK(rc.metrics.frac_corrected == 0.5);  // only sequence 0 exceeds the cap
  // Mask mode, kept range [0.5, 2]: e^1 > 2 and e^-20 < 0.5, both sequences are dropped.
  o.mode = TisMode::mask;
  o.mask_lower = 0.5;
  rc = rollout_correction(old, roll, mask, o);
  check_close(to_vec(rc.mask), {0, 0, 0, 0}, 0, 0, "seq mask");
  // With a cap above e the first sequence is kept with weight e (truncate) / kept (mask).
  o.cap = 3.0;
  rc = rollout_correction(old, roll, mask, o);
  check_close(to_vec(rc.mask), {1, 1, 0, 0}, 0, 0, "seq mask, cap 3");
  o.mode = TisMode::truncate;
  rc = rollout_correction(old, roll, mask, o);
  check_close(to_vec(rc.weight), {std::exp(1.0), std::exp(1.0), std::exp(-20.0), std::exp(-20.0)}, 0, 1e-12,
              "seq weight, cap 3");
  // Token level is unchanged: each token is clamped to +-20 on its own (verl): weights
  // min(e^20, 2) = 2, e^-20, e^-20, min(e^3, 2) = 2.
  o.level = TisLevel::token;
  o.cap = 2.0;
  rc = rollout_correction(old, roll, mask, o);
  check_close(to_vec(rc.weight), {2.0, std::exp(-20.0), std::exp(-20.0), 2.0}, 0, 1e-12,
              "token weight");
}

TEST_CASE("rollout correction matches a plain implementation in every level and mode", "[loss][tis]") {
  const size_t B = 6, T = 9;
  at::manual_seed(21);
  const at::Tensor roll = at::randn({6, 9}, at::kDouble) - 2;
  const at::Tensor old = roll + 0.3 * at::randn({6, 9}, at::kDouble);
  at::Tensor mask = (at::rand({6, 9}, at::kDouble) > 0.3).to(at::kDouble);
  mask[4].zero_();  // an empty sequence: no unit, no weight
  for (const TisLevel level : {TisLevel::token, TisLevel::sequence, TisLevel::none}) {
    for (const TisMode mode : {TisMode::truncate, TisMode::mask}) {
      RolloutCorrectionOptions o;
      o.level = level;
      o.mode = mode;
      o.cap = 1.3;
      o.mask_lower = 0.8;
      INFO(to_string(level) << " / " << to_string(mode));
      auto rc = rollout_correction(old, roll, mask, o);
      const PlainRc ref =
          plain_rc(to_vec(old), to_vec(roll), to_vec(mask), B, T, to_string(level), to_string(mode), 1.3, 0.8);
      // Double throughout; the sequence sum is reassociated: 1e-12.
      const std::vector<double> w = to_vec(rc.weight), mk = to_vec(mask);
      std::vector<double> w_masked, w_ref;  // weights only matter on response tokens
      for (size_t i = 0; i < w.size(); ++i) {
        if (mk[i] != 0) {
          w_masked.push_back(w[i]);
          w_ref.push_back(ref.weight[i]);
        }
      }
      check_close(w_masked, w_ref, 1e-12, 1e-12, "weight");
      check_close(to_vec(rc.mask), ref.mask, 0, 0, "mask");
      check_metrics(rc.metrics, ref.m, 1e-12);
      CHECK_FALSE(rc.weight.requires_grad());
    }
  }
}

TEST_CASE("TIS-weighted policy loss: weight is a constant, gradient checks", "[loss][tis]") {
  at::manual_seed(4);
  const at::Tensor roll = at::randn({3, 5}, at::kDouble) - 1;
  const at::Tensor old = (roll + 0.5 * at::randn({3, 5}, at::kDouble)).requires_grad_(true);
  const at::Tensor lp = old.detach() + 0.1 * at::randn({3, 5}, at::kDouble);
  const at::Tensor adv = at::randn({3}, at::kDouble);
  const at::Tensor mask = at::ones({3, 5}, at::kDouble);
  for (const TisLevel level : {TisLevel::token, TisLevel::sequence}) {
    RolloutCorrectionOptions o;
    o.level = level;
    o.cap = 1.5;
    auto rc = rollout_correction(old, roll, mask, o);
    CHECK_FALSE(rc.weight.requires_grad());  // even though old_logp requires grad
    auto f = [&](const at::Tensor& x) {
      return (ppo_clip_loss(x, old.detach(), adv, mask, PolicyLossOptions{}).per_token_loss * rc.weight * rc.mask)
          .sum();
    };
    check_grad(f, lp, std::string("tis ") + to_string(level));
  }
}

TEST_CASE("rollout correction: huge mismatches stay finite, bad knobs are config errors", "[loss][tis]") {
  // A token the engine found impossible (-1e30) and one the trainer did; a 100-token sequence
  // whose log-ratios add up far beyond exp's range.
  at::Tensor old = at::zeros({2, 100});
  at::Tensor roll = at::zeros({2, 100});
  old[0][0] = -1e30f;
  roll[0][1] = -1e30f;
  roll[1].fill_(-5.0f);
  const at::Tensor mask = at::ones({2, 100});
  for (const TisLevel level : {TisLevel::token, TisLevel::sequence}) {
    for (const TisMode mode : {TisMode::truncate, TisMode::mask}) {
      RolloutCorrectionOptions o;
      o.level = level;
      o.mode = mode;
      auto rc = rollout_correction(old, roll, mask, o);
      INFO(to_string(level) << " / " << to_string(mode));
      CHECK(at::isfinite(rc.weight).all().item<bool>());
      const MismatchMetrics& m = rc.metrics;
      for (double v : {m.kl_k3, m.is_weight_mean, m.is_weight_max, m.ess}) CHECK(std::isfinite(v));
      CHECK(m.ess > 0);
      CHECK(m.ess <= 1.0 + 1e-6);
    }
  }
  // A sequence with both a +inf and a -inf log-ratio has no defined product (inf - inf = NaN);
  // it gets log-weight -20: no weight in truncate mode, dropped in mask mode.
  {
    const float inf = std::numeric_limits<float>::infinity();
    at::Tensor o2 = at::zeros({2, 3});
    at::Tensor r2 = at::zeros({2, 3});
    o2[0][0] = -inf;  // trainer: impossible token; the engine sampled it
    r2[0][1] = -inf;  // engine: impossible token; the trainer finds it likely
    o2[1][0] = inf;   // one +inf only: the sum is +inf, clamped to +20
    const at::Tensor m2 = at::ones({2, 3});
    RolloutCorrectionOptions oi;
    oi.level = TisLevel::sequence;
    auto rc = rollout_correction(o2, r2, m2, oi);
    check_close(to_vec(rc.weight), {std::exp(-20.0), std::exp(-20.0), std::exp(-20.0), 2, 2, 2}, 0, 1e-6,
                "inf weight");
    oi.mode = TisMode::mask;
    rc = rollout_correction(o2, r2, m2, oi);
    check_close(to_vec(rc.mask), {0, 0, 0, 0, 0, 0}, 0, 0, "inf mask");
  }
  // A NaN log-prob at token level (either side): that token's log-ratio is -20 like a NaN
  // sequence's, so the weights, the mask and the metrics stay finite and the others unchanged.
  {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    at::Tensor o3 = at::zeros({1, 3});
    at::Tensor r3 = at::full({1, 3}, -0.5f);
    r3[0][1] = nan;
    o3[0][2] = nan;
    RolloutCorrectionOptions ot;
    ot.level = TisLevel::token;
    auto rc = rollout_correction(o3, r3, at::ones({1, 3}), ot);
    check_close(to_vec(rc.weight), {std::exp(0.5), std::exp(-20.0), std::exp(-20.0)}, 1e-6, 1e-9, "NaN weight");
    const MismatchMetrics& m = rc.metrics;
    for (double v : {m.kl_k3, m.is_weight_mean, m.is_weight_max, m.ess}) CHECK(std::isfinite(v));
    ot.mode = TisMode::mask;
    rc = rollout_correction(o3, r3, at::ones({1, 3}), ot);
    check_close(to_vec(rc.mask), {1, 0, 0}, 0, 0, "NaN mask");
  }
  // Recipe names are mapped once by the trainer (parse_*); rollout_correction takes the enums.
  REQUIRE_THROWS_CONTAINING(parse_tis_level("tok"), ConfigError, "token, sequence, geometric, none");
  REQUIRE_THROWS_CONTAINING(parse_tis_mode("clip"), ConfigError, "truncate, mask");
  for (const TisLevel l : {TisLevel::token, TisLevel::sequence, TisLevel::none}) CHECK(parse_tis_level(to_string(l)) == l);
  for (const TisMode m : {TisMode::truncate, TisMode::mask}) CHECK(parse_tis_mode(to_string(m)) == m);
  RolloutCorrectionOptions o;
  o.cap = 1.0;
  REQUIRE_THROWS_CONTAINING(rollout_correction(old, roll, mask, o), ConfigError, "tis_cap");
  o = {};
  o.mode = TisMode::mask;
  o.mask_lower = 3.0;
  REQUIRE_THROWS_CONTAINING(rollout_correction(old, roll, mask, o), ConfigError, "tis_mask_lower");
  // The recipe's range, (0, 1), also where the cap would allow more.
  o.cap = 5.0;
  o.mask_lower = 1.5;
  REQUIRE_THROWS_CONTAINING(rollout_correction(old, roll, mask, o), ConfigError, "(0, 1)");
}

TEST_CASE("geometric TIS: one weight per sequence, exp of the mean token log-ratio (seq-mask-tis)", "[loss][tis]") {
  // Sequence 0: log-ratios +1, -0.2, +0.5 (mean 0.4333); sequence 1: -1.5 and a pad (mean -1.5).
  const at::Tensor roll = at::zeros({2, 3}, at::kDouble);
  const at::Tensor old = from_vec({1.0, -0.2, 0.5, -1.5, 7.0, 0.0}, {2, 3});
  const at::Tensor mask = from_vec({1, 1, 1, 1, 0, 0}, {2, 3});
  RolloutCorrectionOptions o;
  o.level = TisLevel::geometric;
  o.cap = 2.0;
  auto rc = rollout_correction(old, roll, mask, o);
  const double g0 = std::exp(1.3 / 3), g1 = std::exp(-1.5);
  check_close(to_vec(rc.weight), {g0, g0, g0, g1, g1, g1}, 0, 1e-12, "geometric weight");
  CHECK(rc.metrics.num_units == 2);
  // Mask mode, kept range [0.5, 2]: sequence 1 (e^-1.5 = 0.22) is dropped whole.
  o.mode = TisMode::mask;
  o.mask_lower = 0.5;
  rc = rollout_correction(old, roll, mask, o);
  check_close(to_vec(rc.mask), {1, 1, 1, 0, 0, 0}, 0, 0, "seq-mask-tis");
  CHECK(parse_tis_level("geometric") == TisLevel::geometric);
}
