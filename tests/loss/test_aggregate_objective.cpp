// loss_agg_mode aggregation (global normalisers, micro-batch equivalence) and the composed
// policy objective.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "core/util/error.h"
#include "loss/aggregate.h"
#include "loss/policy_objective.h"
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

const char* kModes[] = {"token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"};

double plain_aggregate(const std::vector<double>& l, const std::vector<double>& m, size_t B, size_t T,
                       const std::string& mode, double max_len) {
  double n_tok = 0, n_seq = 0, total = 0;
  for (size_t b = 0; b < B; ++b) {
    double s = 0, c = 0;
    for (size_t t = 0; t < T; ++t) {
      s += l[b * T + t] * m[b * T + t];
      c += m[b * T + t];
    }
    n_tok += c;
    n_seq += c > 0;
    if (mode == "seq-mean-token-mean") total += c > 0 ? s / c : 0;
    else total += s;
  }
  if (mode == "token-mean") return total / n_tok;
  if (mode == "seq-mean-token-sum-norm") return total / max_len;  // verl: no mean over sequences
  return total / n_seq;
}

// Uneven micro-batches of B = 10 rows.
const std::vector<std::pair<int64_t, int64_t>> kSplits{{0, 2}, {2, 7}, {7, 10}};

}  // namespace

TEST_CASE("aggregation: hand-computed example", "[loss][aggregate]") {
  // Sequence 0: losses 1, 2, 3 (3 tokens); sequence 1: 4 (1 token, then padding holding 100).
  const at::Tensor l = from_vec({1, 2, 3, 4, 100, 100}, {2, 3});
  const at::Tensor m = from_vec({1, 1, 1, 1, 0, 0}, {2, 3});
  const AggregationScale s = count_scale(m, 8);
  CHECK(s.global_num_tokens == 4);
  CHECK(s.global_num_seqs == 2);
  auto agg = [&](const char* mode) { return aggregate_loss(l, m, parse_loss_agg_mode(mode), s).item<double>(); };
  CHECK(std::fabs(agg("token-mean") - 10.0 / 4) < 1e-15);
  CHECK(std::fabs(agg("seq-mean-token-sum") - 10.0 / 2) < 1e-15);
  CHECK(std::fabs(agg("seq-mean-token-mean") - (2.0 + 4.0) / 2) < 1e-15);
  // Issue 15: this used to be 10 / 8 / 2 (also divided by the number of sequences); verl
  // divides the token sum by the constant only (aggregate.h), so it is 10 / 8.
  CHECK(std::fabs(agg("seq-mean-token-sum-norm") - 10.0 / 8) < 1e-15);
  REQUIRE_THROWS_CONTAINING(parse_loss_agg_mode("token_mean"), ConfigError,
                            "token-mean, seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm");
  CHECK_THROWS_AS(aggregate_loss(l, m, LossAggMode::token_mean, AggregationScale{}), std::logic_error);
}

TEST_CASE("seq-mean-token-sum-norm divides the token sum by max_response_length only (verl)", "[loss][aggregate]") {
  // Issue 15's example: masks [1,1,1,0] and [1,0,0,0], per-token loss 1, Lmax 4: the token sum
  // is 4 and verl's agg_loss gives 4 / 4 = 1 (fp8rl used to give 4 / (4 * 2 sequences) = 0.5).
  const at::Tensor l = at::ones({2, 4}, at::kDouble);
  const at::Tensor m = from_vec({1, 1, 1, 0, 1, 0, 0, 0}, {2, 4});
  const AggregationScale whole = count_scale(m, 4);
  CHECK(aggregate_loss(l, m, LossAggMode::seq_mean_token_sum_norm, whole).item<double>() == 1.0);
  // One sequence per micro-batch, scale summed over the parts: shares 3/4 and 1/4 add up to 1.
  AggregationScale parts;  // default: max_response_length taken from the parts
  for (int64_t b = 0; b < 2; ++b) parts += count_scale(m.slice(0, b, b + 1), 4);
  CHECK(parts.max_response_length == 4);
  const double s0 = aggregate_loss(l.slice(0, 0, 1), m.slice(0, 0, 1), LossAggMode::seq_mean_token_sum_norm, parts)
                        .item<double>();
  const double s1 = aggregate_loss(l.slice(0, 1, 2), m.slice(0, 1, 2), LossAggMode::seq_mean_token_sum_norm, parts)
                        .item<double>();
  CHECK(s0 == 0.75);
  CHECK(s1 == 0.25);
  // Only the constant is needed: an all-masked mini-batch gives 0 rather than an error, and
  // a missing constant is an error.
  const at::Tensor none = at::zeros({2, 4}, at::kDouble);
  CHECK(aggregate_loss(l, none, LossAggMode::seq_mean_token_sum_norm, count_scale(none, 4)).item<double>() == 0.0);
  CHECK_THROWS_AS(aggregate_loss(l, m, LossAggMode::seq_mean_token_sum_norm, count_scale(m, 0)), std::logic_error);
  // Parts counted with different constants cannot be combined.
  AggregationScale bad = count_scale(m, 4);
  CHECK_THROWS_AS(bad += count_scale(m, 8), std::logic_error);
}

TEST_CASE("aggregation: plain implementation, gradients, micro-batches", "[loss][aggregate]") {
  const int64_t B = 10, T = 6;
  at::manual_seed(8);
  const at::Tensor x = at::randn({B, T}, at::kDouble);
  at::Tensor mask = (at::rand({B, T}, at::kDouble) > 0.35).to(at::kDouble);
  mask[3].zero_();  // an empty sequence: not counted, contributes nothing
  auto per_token = [](const at::Tensor& v) { return v * v * v - v.sin(); };  // any nonlinear loss
  const AggregationScale global = count_scale(mask, 12);
  for (const char* name : kModes) {
    INFO(name);
    const LossAggMode mode = parse_loss_agg_mode(name);
    // Double, a handful of terms per sum: 1e-12.
    const double ref = plain_aggregate(to_vec(per_token(x)), to_vec(mask), B, T, name, 12);
    CHECK(std::fabs(aggregate_loss(per_token(x), mask, mode, global).item<double>() - ref) <= 1e-12 * (1 + std::fabs(ref)));
    check_grad([&](const at::Tensor& v) { return aggregate_loss(per_token(v), mask, mode, global); }, x, name);

    // Whole batch vs three uneven micro-batches with the same global scale: the sums of
    // values and of gradients agree to rounding (1e-13).
    const at::Tensor xw = x.clone().requires_grad_(true);
    const at::Tensor whole = aggregate_loss(per_token(xw), mask, mode, global);
    whole.backward();
    const at::Tensor xm = x.clone().requires_grad_(true);
    double sum = 0;
    AggregationScale parts;  // max_response_length comes from the parts
    for (auto [a, b] : kSplits) {
      const at::Tensor part = aggregate_loss(per_token(xm.slice(0, a, b)), mask.slice(0, a, b), mode, global);
      part.backward();
      sum += part.item<double>();
      parts += count_scale(mask.slice(0, a, b), 12);
    }
    CHECK(parts.global_num_tokens == global.global_num_tokens);
    CHECK(parts.global_num_seqs == global.global_num_seqs);
    CHECK(parts.max_response_length == 12);
    CHECK(std::fabs(sum - whole.item<double>()) <= 1e-13);
    check_close(xm.grad(), xw.grad(), 1e-13, 1e-12, "micro-batch grad");
  }
}

namespace {

struct ObjectiveData {
  at::Tensor logp, old_logp, rollout_logp, adv, mask, ref_logp, ent_src;
};

ObjectiveData make_data(int64_t B, int64_t T) {
  at::manual_seed(99);
  ObjectiveData d;
  d.rollout_logp = -at::rand({B, T}, at::kDouble) * 3;
  d.old_logp = d.rollout_logp + 0.3 * at::randn({B, T}, at::kDouble);
  d.logp = d.old_logp + 0.15 * at::randn({B, T}, at::kDouble);
  d.ref_logp = d.old_logp + 0.2 * at::randn({B, T}, at::kDouble);
  d.adv = at::randn({B}, at::kDouble);
  d.mask = (at::rand({B, T}, at::kDouble) > 0.3).to(at::kDouble);
  return d;
}

// A differentiable entropy stand-in that depends on logp, so its gradient is exercised.
at::Tensor fake_entropy(const at::Tensor& logp) { return -logp * logp.exp(); }

PolicyObjectiveOptions options_for(const char* agg, const char* level, const char* mode) {
  PolicyObjectiveOptions o;
  o.loss_agg_mode = parse_loss_agg_mode(agg);
  o.policy.clip_ratio_high = 0.28;
  o.policy.clip_ratio_c = 3.0;
  o.correction.level = parse_tis_level(level);
  o.correction.mode = parse_tis_mode(mode);
  o.correction.cap = 1.4;
  o.correction.mask_lower = 0.7;
  o.use_kl_loss = true;
  o.kl_loss_coef = 0.1;
  o.kl_loss_type = KlType::k3;
  o.entropy_coeff = 0.01;
  return o;
}

}  // namespace

TEST_CASE("policy objective equals a plain composition (token-mean)", "[loss][objective]") {
  const int64_t B = 4, T = 5;
  ObjectiveData d = make_data(B, T);
  const PolicyObjectiveOptions o = options_for("token-mean", "token", "truncate");
  const at::Tensor ent = fake_entropy(d.logp);
  const AggregationScale scale = count_scale(d.mask, T);
  const PolicyObjective obj = policy_objective({d.logp, d.old_logp, d.rollout_logp, d.adv, d.mask, d.ref_logp, ent}, o,
                                               scale);
  const auto lp = to_vec(d.logp), old = to_vec(d.old_logp), roll = to_vec(d.rollout_logp), ref = to_vec(d.ref_logp),
             m = to_vec(d.mask), a = to_vec(d.adv), e = to_vec(ent);
  double total = 0, n = 0;
  for (size_t i = 0; i < lp.size(); ++i) {
    if (m[i] == 0) continue;
    const double adv = a[i / T], r = std::exp(lp[i] - old[i]);
    double pg = std::max(-adv * r, -adv * std::clamp(r, 0.8, 1.28));
    if (adv < 0) pg = std::min(pg, -adv * 3.0);
    const double w = std::min(std::exp(old[i] - roll[i]), 1.4);
    const double k = std::exp(ref[i] - lp[i]) - (ref[i] - lp[i]) - 1;
    total += pg * w + 0.1 * k - 0.01 * e[i];
    n += 1;
  }
  // Double; 20 terms: 1e-12.
  CHECK(std::fabs(obj.loss.item<double>() - total / n) < 1e-12);
  CHECK(obj.metrics.count("mismatch/ess") == 1);
  CHECK(obj.metrics.count("pg_clipfrac_high") == 1);
}

TEST_CASE("policy objective: micro-batches give the whole-batch loss and gradient", "[loss][objective]") {
  const int64_t B = 10, T = 7;
  ObjectiveData d = make_data(B, T);
  for (const char* agg : kModes) {
    for (auto [level, mode] : std::vector<std::pair<const char*, const char*>>{
             {"token", "truncate"}, {"sequence", "truncate"}, {"token", "mask"}, {"sequence", "mask"}, {"none", "truncate"}}) {
      INFO(agg << " " << level << "/" << mode);
      const PolicyObjectiveOptions o = options_for(agg, level, mode);
      // The global scale comes from the effective mask of the whole batch.
      const at::Tensor eff = rollout_correction(d.old_logp, d.rollout_logp, d.mask, o.correction).mask;
      const AggregationScale scale = count_scale(eff, T);
      auto run = [&](const at::Tensor& x, int64_t a, int64_t b) {
        auto s = [&](const at::Tensor& t) { return t.slice(0, a, b); };
        return policy_objective({s(x), s(d.old_logp), s(d.rollout_logp), s(d.adv), s(d.mask), s(d.ref_logp),
                                 fake_entropy(s(x))},
                                o, scale)
            .loss;
      };
      const at::Tensor xw = d.logp.clone().requires_grad_(true);
      const at::Tensor whole = run(xw, 0, B);
      whole.backward();
      const at::Tensor xm = d.logp.clone().requires_grad_(true);
      double sum = 0;
      for (auto [a, b] : kSplits) {
        const at::Tensor part = run(xm, a, b);
        part.backward();
        sum += part.item<double>();
      }
      // Same terms, summed in a different grouping: 1e-13.
      CHECK(std::fabs(sum - whole.item<double>()) < 1e-13);
      check_close(xm.grad(), xw.grad(), 1e-13, 1e-12, "micro-batch grad");
      check_grad([&](const at::Tensor& x) { return run(x, 0, B); }, d.logp, "objective");
    }
  }
}

TEST_CASE("policy objective: with TIS mask mode the clip metrics cover the kept tokens only", "[loss][objective]") {
  const int64_t B = 6, T = 9;
  ObjectiveData d = make_data(B, T);
  const PolicyObjectiveOptions o = options_for("token-mean", "token", "mask");
  const at::Tensor kept = rollout_correction(d.old_logp, d.rollout_logp, d.mask, o.correction).mask;  // [B, T]
  // The data must make the point: some response tokens dropped, some kept.
  REQUIRE(kept.sum().item<double>() > 0);
  REQUIRE(kept.sum().item<double>() < d.mask.sum().item<double>());
  const PolicyObjective obj = policy_objective({d.logp, d.old_logp, d.rollout_logp, d.adv, d.mask, d.ref_logp,
                                                fake_entropy(d.logp)},
                                               o, count_scale(kept, T));
  const auto lp = to_vec(d.logp), old = to_vec(d.old_logp), k = to_vec(kept), a = to_vec(d.adv);
  double kl = 0, high = 0, n = 0;
  for (size_t i = 0; i < lp.size(); ++i) {
    if (k[i] == 0) continue;
    const double r = std::exp(lp[i] - old[i]);
    kl += old[i] - lp[i];
    high += a[i / T] > 0 && r > 1.28;
    n += 1;
  }
  CHECK(std::fabs(obj.metrics.at("ppo_kl") - kl / n) < 1e-12);
  CHECK(std::fabs(obj.metrics.at("pg_clipfrac_high") - high / n) < 1e-12);
  check_close(obj.mask, kept, 0, 0, "effective mask");
}
