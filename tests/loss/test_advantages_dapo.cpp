// Advantages (GRPO, Dr.GRPO, batch whitening) and DAPO's group filter and overlong shaping.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/util/error.h"
#include "loss/advantages.h"
#include "loss/dapo.h"
#include "tests/catch.h"
#include "tests/loss/loss_test_util.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::loss;
using fp8rl::test::check_close;
using fp8rl::test::to_vec;

namespace {

at::Tensor ids(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }
at::Tensor vals(const std::vector<double>& v) { return at::tensor(v, at::kDouble); }

// Plain reference: group statistics with maps and loops.
std::vector<double> plain_advantages(const std::vector<double>& r, const std::vector<int64_t>& g, bool std_norm,
                                     bool batch_norm, double eps) {
  std::map<int64_t, std::vector<double>> groups;
  for (size_t i = 0; i < r.size(); ++i) groups[g[i]].push_back(r[i]);
  std::vector<double> adv(r.size());
  std::vector<bool> signal(r.size());
  for (size_t i = 0; i < r.size(); ++i) {
    const auto& xs = groups[g[i]];
    signal[i] = *std::max_element(xs.begin(), xs.end()) > *std::min_element(xs.begin(), xs.end());
    if (!signal[i]) { adv[i] = 0; continue; }
    double mean = 0;
    for (double x : xs) mean += x;
    mean /= static_cast<double>(xs.size());
    double var = 0;
    for (double x : xs) var += (x - mean) * (x - mean);
    var /= static_cast<double>(xs.size() - 1);
    adv[i] = std_norm ? (r[i] - mean) / (std::sqrt(var) + eps) : r[i] - mean;
  }
  // Whitening over the samples with a signal; the others stay 0.
  const double live = static_cast<double>(std::count(signal.begin(), signal.end(), true));
  if (batch_norm && live > 1) {
    double mean = 0, var = 0;
    for (size_t i = 0; i < adv.size(); ++i) mean += signal[i] ? adv[i] : 0;
    mean /= live;
    for (size_t i = 0; i < adv.size(); ++i) var += signal[i] ? (adv[i] - mean) * (adv[i] - mean) : 0;
    var /= live - 1;
    for (size_t i = 0; i < adv.size(); ++i)
      if (signal[i]) adv[i] = (adv[i] - mean) / (std::sqrt(var) + eps);
  }
  return adv;
}

}  // namespace

TEST_CASE("GRPO advantages: hand-computed example", "[loss][advantages]") {
  // Group 7: rewards 1, 0, 1, 0 -> mean 0.5, unbiased std sqrt(1/3); group 3: singleton -> 0;
  // group 5: 2, 2 -> all equal -> 0.
  const auto r = vals({1, 0, 3.5, 1, 0, 2, 2});
  const auto g = ids({7, 7, 3, 7, 7, 5, 5});
  AdvantageOptions o;
  o.eps = 1e-6;
  const double s = std::sqrt(1.0 / 3.0);
  const double a = 0.5 / (s + 1e-6);
  // Exact formula evaluated in double, same operations: 1e-12 covers reassociation only.
  check_close(to_vec(compute_advantages(r, g, o)), {a, -a, 0, a, -a, 0, 0}, 1e-12, 1e-12, "grpo");
  o.estimator = AdvEstimator::dr_grpo;
  check_close(to_vec(compute_advantages(r, g, o)), {0.5, -0.5, 0, 0.5, -0.5, 0, 0}, 1e-12, 1e-12, "dr_grpo");
}

TEST_CASE("advantages match a plain implementation on random uneven groups", "[loss][advantages]") {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> gid(-50, 1000000);
  std::uniform_int_distribution<int> gsize(1, 9), coin(0, 3);
  std::normal_distribution<double> nd;
  std::vector<double> r;
  std::vector<int64_t> g;
  for (int k = 0; k < 20; ++k) {
    const int64_t id = gid(rng);
    const int n = gsize(rng);
    for (int i = 0; i < n; ++i) {
      r.push_back(coin(rng) == 0 ? 1.0 : nd(rng));
      g.push_back(id);
    }
  }
  std::shuffle(r.begin(), r.end(), rng);  // interleave groups: ids, not positions, define them
  for (const AdvEstimator est : {AdvEstimator::grpo, AdvEstimator::dr_grpo}) {
    for (bool batch : {false, true}) {
      AdvantageOptions o;
      o.estimator = est;
      o.norm_adv_by_batch = batch;
      INFO(to_string(est) << " norm_adv_by_batch=" << batch);
      // Double in, double out; different summation order only: 1e-10 absolute is ample.
      check_close(to_vec(compute_advantages(vals(r), ids(g), o)),
                  plain_advantages(r, g, est == AdvEstimator::grpo, batch, o.eps), 1e-10, 1e-10, "advantages");
    }
  }
  // float32 rewards give float32 advantages close to the double ones (1e-5: float rounding).
  AdvantageOptions o;
  const at::Tensor a32 = compute_advantages(vals(r).to(at::kFloat), ids(g), o);
  CHECK(a32.scalar_type() == at::kFloat);
  check_close(to_vec(a32), plain_advantages(r, g, true, false, o.eps), 1e-4, 1e-4, "float32");
}

TEST_CASE("advantages: a group of equal rewards gets exactly 0 in any reward dtype", "[loss][advantages]") {
  // Issue 15: seven float32 rewards of 0.7 got advantage ~+0.056 from rounding alone (the mean
  // is an ulp off 0.7f, the std ~1e-8 instead of 0). Statistics now run in double and a group
  // whose max equals its min gets exactly 0. Group 1 (0, 1) has a signal: +-0.5 / (sqrt(0.5) + eps).
  std::vector<double> r(7, 0.7);
  std::vector<int64_t> g(7, 4);
  r.push_back(0.0);
  r.push_back(1.0);
  g.push_back(1);
  g.push_back(1);
  const double a = 0.5 / (std::sqrt(0.5) + 1e-6);
  for (const auto dtype : {at::kFloat, at::kBFloat16, at::kDouble}) {
    for (bool batch : {false, true}) {
      for (const AdvEstimator est : {AdvEstimator::grpo, AdvEstimator::dr_grpo}) {
        AdvantageOptions o;
        o.estimator = est;
        o.norm_adv_by_batch = batch;
        INFO(dtype << " " << to_string(est) << " norm_adv_by_batch=" << batch);
        const at::Tensor adv = compute_advantages(vals(r).to(dtype), ids(g), o);
        CHECK(adv.scalar_type() == at::promote_types(dtype, at::kFloat));
        const std::vector<double> got = to_vec(adv);
        if (!batch) {
          for (int i = 0; i < 7; ++i) CHECK(got[static_cast<size_t>(i)] == 0.0);  // exactly, not approximately
          const double want = est == AdvEstimator::grpo ? a : 0.5;
          // The other group: double math rounded once to the output dtype (float32: 1e-6 relative).
          check_close({got[7], got[8]}, {-want, want}, 0, 1e-6, "signal group");
        } else {
          // Whitening leaves the equal group out: it stays exactly 0, and the signal group's
          // two samples -x, x whiten to -+1 / sqrt(2) whatever the seven zeros (unbiased std
          // of {-x, x} is x sqrt(2); eps is 1e-6 against it).
          for (int i = 0; i < 7; ++i) CHECK(got[static_cast<size_t>(i)] == 0.0);
          check_close({got[7], got[8]}, {-1 / std::sqrt(2.0), 1 / std::sqrt(2.0)}, 0, 1e-5, "whitened signal group");
        }
      }
    }
  }
  // The same rule covers a bf16 group whose values round to one bf16 number: 0.7 and 0.7001
  // are both 0.69921875 in bf16, so the group is all equal and gets 0.
  const at::Tensor nearly = compute_advantages(vals({0.7, 0.7001, 0.7}).to(at::kBFloat16), ids({0, 0, 0}), {});
  check_close(to_vec(nearly), {0, 0, 0}, 0, 0, "bf16 equal after rounding");
}

TEST_CASE("advantages: recipe names and bad shapes", "[loss][advantages]") {
  // The recipe's strings are mapped once by the trainer; compute_advantages only takes the enum.
  CHECK(parse_adv_estimator("grpo") == AdvEstimator::grpo);
  CHECK(parse_adv_estimator("dr_grpo") == AdvEstimator::dr_grpo);
  for (const AdvEstimator e : {AdvEstimator::grpo, AdvEstimator::dr_grpo}) CHECK(parse_adv_estimator(to_string(e)) == e);
  REQUIRE_THROWS_CONTAINING(parse_adv_estimator("ppo"), ConfigError, "grpo, dr_grpo");
  CHECK_THROWS_AS(compute_advantages(vals({1, 2}), ids({0}), AdvantageOptions{}), std::logic_error);
  CHECK(compute_advantages(vals({}), ids({}), AdvantageOptions{}).numel() == 0);
}

TEST_CASE("DAPO group filter keeps groups whose rewards differ", "[loss][dapo]") {
  const auto r = vals({1, 1, 1, 0, 1, 5, 0.5, 0.5});
  const auto g = ids({10, 10, 10, 20, 20, 30, 40, 40});
  // group 10 all equal, 20 differs, 30 singleton, 40 all equal
  const std::vector<double> want{0, 0, 0, 1, 1, 0, 0, 0};
  check_close(to_vec(filter_groups_mask(r, g)), want, 0, 0, "mask");
  check_close(to_vec(filter_groups_indices(r, g)), {3, 4}, 0, 0, "indices");

  // Plain reference on random groups with few distinct reward values.
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> rv(0, 1), gi(0, 12);
  std::vector<double> rr;
  std::vector<int64_t> gg;
  for (int i = 0; i < 60; ++i) {
    rr.push_back(rv(rng));
    gg.push_back(gi(rng) * 37);
  }
  std::map<int64_t, std::pair<double, double>> mm;  // min, max
  for (size_t i = 0; i < rr.size(); ++i) {
    auto it = mm.find(gg[i]);
    if (it == mm.end()) mm[gg[i]] = {rr[i], rr[i]};
    else it->second = {std::min(it->second.first, rr[i]), std::max(it->second.second, rr[i])};
  }
  std::vector<double> keep;
  for (size_t i = 0; i < rr.size(); ++i) keep.push_back(mm[gg[i]].second > mm[gg[i]].first ? 1 : 0);
  check_close(to_vec(filter_groups_mask(vals(rr), ids(gg))), keep, 0, 0, "random groups");
  CHECK(filter_groups_mask(vals({}), ids({})).numel() == 0);
}

TEST_CASE("DAPO overlong shaping at the boundaries", "[loss][dapo]") {
  // Lmax 20, buffer 4, factor 1: free up to 16, then -1/4 per token, -1 at 20 and beyond.
  CHECK(overlong_penalty(0, 20, 4, 1.0) == 0.0);
  CHECK(overlong_penalty(16, 20, 4, 1.0) == 0.0);
  CHECK(overlong_penalty(17, 20, 4, 1.0) == -0.25);
  CHECK(overlong_penalty(18, 20, 4, 1.0) == -0.5);
  CHECK(overlong_penalty(20, 20, 4, 1.0) == -1.0);
  CHECK(overlong_penalty(25, 20, 4, 1.0) == -1.0);
  CHECK(overlong_penalty(19, 20, 4, 2.0) == -1.5);
  CHECK(overlong_penalty(20, 20, 0, 1.0) == 0.0);   // off
  CHECK(overlong_penalty(0, 20, 20, 1.0) == 0.0);   // buffer = whole length: L = 0 is free
  CHECK(overlong_penalty(1, 20, 20, 1.0) == -0.05);
  // The tensor version agrees with the scalar one (float32 output: 1e-7 relative).
  std::vector<int64_t> lens;
  std::vector<double> want;
  for (int64_t L = 0; L <= 26; ++L) {
    lens.push_back(L);
    want.push_back(overlong_penalty(L, 20, 5, 0.7));
  }
  check_close(to_vec(overlong_penalty(ids(lens), 20, 5, 0.7)), want, 1e-7, 1e-6, "tensor overlong");
  REQUIRE_THROWS_CONTAINING(overlong_penalty(5, 20, 21, 1.0), ConfigError, "overlong_buffer_len");
  REQUIRE_THROWS_CONTAINING(overlong_penalty(5, 20, -1, 1.0), ConfigError, "overlong_buffer_len");
  REQUIRE_THROWS_CONTAINING(overlong_penalty(5, 20, 4, -1.0), ConfigError, "overlong_penalty_factor");
}
