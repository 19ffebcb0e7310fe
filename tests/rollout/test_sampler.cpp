// The sampler against its definition: greedy is argmax; log-probs are the full-vocabulary
// log softmax(logits / T) the trainer recomputes; top-k / top-p never leave their set; draws are
// a pure function of (seed, sample, position), so batch composition and order do not matter; and
// the empirical distribution of many seeded draws matches the (truncated) softmax.
#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "core/util/error.h"
#include "rollout/race_noise.h"
#include "rollout/sampler.h"
#include "tests/catch.h"
#include "tests/rollout/race_seed_util.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::rollout;

namespace {

at::Tensor logits_of(const std::vector<float>& v) { return at::tensor(v).unsqueeze(0); }  // [1, V]

}  // namespace

TEST_CASE("sampler: greedy is argmax, log-probs are the full-vocabulary log softmax at T = 1", "[rollout][sampler]") {
  const at::Tensor logits = at::randn({5, 37}, at::TensorOptions().dtype(at::kFloat));
  std::vector<SamplingParams> p(5, SamplingParams{0.0});
  std::vector<SampleKey> k(5);
  const SampleResult r = sample(logits, p, k);
  CHECK(at::equal(r.tokens, logits.argmax(1)));
  const at::Tensor want = at::log_softmax(logits, 1).gather(1, r.tokens.unsqueeze(1)).squeeze(1);
  CHECK(at::allclose(r.logprobs, want, 0, 1e-6));
  REQUIRE(r.logprobs.scalar_type() == at::kFloat);
}

TEST_CASE("sampler: sampled tokens report log softmax(logits / T) over the whole vocabulary", "[rollout][sampler]") {
  at::manual_seed(1);
  const at::Tensor logits = at::randn({8, 50}, at::TensorOptions().dtype(at::kBFloat16));
  std::vector<SamplingParams> p;
  std::vector<SampleKey> k;
  for (int i = 0; i < 8; ++i) {
    p.push_back({0.7, i % 2 ? 5 : 0, i % 3 ? 0.9 : 1.0, 42});
    k.push_back({static_cast<uint64_t>(i), 10});
  }
  const SampleResult r = sample(logits, p, k);
  // Truncation does not renormalise the reported log-prob: it is the plain distribution's.
  const at::Tensor want = at::log_softmax(logits.to(at::kFloat) / 0.7, 1).gather(1, r.tokens.unsqueeze(1)).squeeze(1);
  CHECK(at::allclose(r.logprobs, want, 0, 1e-6));
}

TEST_CASE("sampler: a row's draw depends on (seed, sample, position) only, not on its batch", "[rollout][sampler]") {
  at::manual_seed(2);
  const at::Tensor logits = at::randn({6, 64}, at::TensorOptions().dtype(at::kFloat));
  std::vector<SamplingParams> p(6, SamplingParams{1.0, 0, 0.95, 7});
  std::vector<SampleKey> k;
  for (int i = 0; i < 6; ++i) k.push_back({static_cast<uint64_t>(i), 3 + i});
  const at::Tensor batch = sample(logits, p, k).tokens;
  // Each row alone, and the batch reversed.
  for (int i = 0; i < 6; ++i) {
    const std::vector<SamplingParams> p1{p[i]};
    const std::vector<SampleKey> k1{k[i]};
    CHECK(sample(logits.narrow(0, i, 1), p1, k1).tokens.item<int64_t>() == batch[i].item<int64_t>());
  }
  std::vector<SamplingParams> pr(p.rbegin(), p.rend());
  std::vector<SampleKey> kr(k.rbegin(), k.rend());
  CHECK(at::equal(sample(logits.flip(0), pr, kr).tokens.flip(0), batch));
  // A different seed, sample or position changes the stream.
  CHECK(row_seed(7, {0, 3}) != row_seed(8, {0, 3}));
  CHECK(row_seed(7, {0, 3}) != row_seed(7, {1, 3}));
  CHECK(row_seed(7, {0, 3}) != row_seed(7, {0, 4}));
}

TEST_CASE("sampler: top-k and top-p never leave their set", "[rollout][sampler]") {
  // Probabilities ~ [0.5, 0.25, 0.125, ...]: top-p 0.7 keeps two tokens, top-k 3 keeps three.
  std::vector<float> v;
  for (int i = 0; i < 10; ++i) v.push_back(-0.6931472f * static_cast<float>(i));
  const at::Tensor logits = logits_of(v);
  for (uint64_t pos = 0; pos < 300; ++pos) {
    const std::vector<SampleKey> key{{0, static_cast<int64_t>(pos)}};
    const std::vector<SamplingParams> k3{{1.0, 3, 1.0, 5}}, p07{{1.0, 0, 0.7, 5}}, k1{{1.0, 1, 1.0, 5}};
    CHECK(sample(logits, k3, key).tokens.item<int64_t>() < 3);
    CHECK(sample(logits, p07, key).tokens.item<int64_t>() < 2);
    CHECK(sample(logits, k1, key).tokens.item<int64_t>() == 0);
  }
}

TEST_CASE("sampler: seeded draws follow softmax(logits / T) and the truncated softmax", "[rollout][sampler]") {
  const at::Tensor logits = logits_of({1.0f, 0.5f, 0.0f, -0.5f, -2.0f});
  const int n = 20000;
  auto frequencies = [&](const SamplingParams& p) {
    std::vector<double> f(5, 0.0);
    for (int i = 0; i < n; ++i) {
      const std::vector<SamplingParams> pp{p};
      const std::vector<SampleKey> kk{{static_cast<uint64_t>(i), 0}};
      f[sample(logits, pp, kk).tokens.item<int64_t>()] += 1.0 / n;
    }
    return f;
  };
  // Binomial standard error at n = 20000 is <= 0.0036; 0.015 is > 4 sigma.
  const std::vector<double> f = frequencies({0.8, 0, 1.0, 3});
  const at::Tensor want = at::softmax(logits[0] / 0.8, 0);
  for (int t = 0; t < 5; ++t) CHECK(std::abs(f[t] - want[t].item<double>()) < 0.015);
  const std::vector<double> fk = frequencies({1.0, 2, 1.0, 3});
  const at::Tensor top2 = at::softmax(logits[0].narrow(0, 0, 2), 0);
  CHECK(std::abs(fk[0] - top2[0].item<double>()) < 0.015);
  CHECK(std::abs(fk[1] - top2[1].item<double>()) < 0.015);
  CHECK(fk[2] + fk[3] + fk[4] == 0.0);
}

// The race's uniform stays inside (0, 1) at the extreme hashes, so its noise stays finite. A
// 24-bit version rounded its largest value to 1 in float: noise +inf, and the entry with that
// hash won whatever its logit (about one draw in 110 at a 152K vocabulary).
TEST_CASE("sampler: the race noise is finite at the extreme hashes, so a hopeless token never wins", "[rollout][sampler]") {
  using testing::mix64_inverse;
  for (const uint64_t h : {0ull, 1ull << 41, ~0ull, ~0ull << 41, 0x8000000000000000ull}) {
    const float u = uniform_from_hash(h);
    CHECK(u > 0.0f);
    CHECK(u < 1.0f);
    CHECK(std::isfinite(-std::log(-std::log(u))));
  }
  CHECK(-std::log(-std::log(uniform_from_hash(~0ull))) < 16.7f);
  // The helper that crafts seeds runs the hashes backwards.
  for (const uint64_t x : {0ull, 1ull, 0x123456789ABCDEFull, ~0ull}) CHECK(mix64_inverse(mix64(x)) == x);
  // A row where entry 7 gets the largest hash, and a logit 30 below every other entry's:
  // exp(-30) * (V - 1) ~ 1e-9 of the mass, so it must lose the race.
  const int64_t V = 64, hopeless = 7;
  const SampleKey key{3, 11};
  const uint64_t seed = testing::seed_for_hash(~0ull, hopeless, key);
  REQUIRE(mix64(row_seed(seed, key) ^ mix64(hopeless)) == ~0ull);
  std::vector<float> x(V, 0.0f);
  x[hopeless] = -30.0f;
  const std::vector<SamplingParams> p{{1.0, 0, 1.0, seed}};
  const std::vector<SampleKey> k{key};
  CHECK(sample(logits_of(x), p, k).tokens.item<int64_t>() != hopeless);
}

// top_p * (sum of probabilities) underflows to 0 in float for top_p below ~1e-45: the most likely
// token must still be kept (and drawn), not token 0 out of an all -inf row.
TEST_CASE("sampler: a top_p too small for float keeps the most likely token", "[rollout][sampler]") {
  const at::Tensor logits = logits_of({0.0f, 5.0f, 1.0f});
  for (const double top_p : {1e-300, 1e-46, 1e-3}) {
    const std::vector<SamplingParams> p{{1.0, 0, top_p, 9}};
    const std::vector<SampleKey> k{{0, 0}};
    CHECK(sample(logits, p, k).tokens.item<int64_t>() == 1);
  }
}

TEST_CASE("sampler: bad parameters are config errors", "[rollout][sampler]") {
  const at::Tensor logits = logits_of({0.0f, 1.0f});
  const std::vector<SampleKey> key{{0, 0}};
  REQUIRE_THROWS_CONTAINING(sample(logits, std::vector<SamplingParams>{{-1.0}}, key), ConfigError, "temperature");
  REQUIRE_THROWS_CONTAINING(sample(logits, std::vector<SamplingParams>{{1.0, 0, 0.0}}, key), ConfigError, "top_p");
  CHECK(sample(at::empty({0, 4}), {}, {}).tokens.numel() == 0);
}
