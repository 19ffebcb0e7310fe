// The sampler on CUDA: the counter-based noise gives batch-independent draws, greedy is argmax,
// log-probs are the full-vocabulary log softmax, and top-k holds, at a real vocabulary size.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <cmath>
#include <vector>

#include "rollout/race_noise.h"
#include "rollout/sampler.h"
#include "tests/catch.h"
#include "tests/rollout/race_seed_util.h"

using namespace fp8rl::rollout;

TEST_CASE("sampler on CUDA: batch-independent seeded draws, greedy, log-probs, top-k", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(3);
  const int64_t S = 9, V = 151936;
  const at::Tensor logits = at::randn({S, V}, at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16)) * 3;
  std::vector<SamplingParams> p;
  std::vector<SampleKey> k;
  for (int64_t i = 0; i < S; ++i) {
    p.push_back({i == 0 ? 0.0 : 0.9, i % 2 ? 20 : 0, i % 3 ? 0.95 : 1.0, 11});
    k.push_back({static_cast<uint64_t>(i), 100 + i});
  }
  const SampleResult r = sample(logits, p, k);
  REQUIRE(r.tokens.is_cuda());
  CHECK(r.tokens[0].item<int64_t>() == logits[0].argmax().item<int64_t>());
  for (int64_t i = 0; i < S; ++i) {
    const std::vector<SamplingParams> p1{p[i]};
    const std::vector<SampleKey> k1{k[i]};
    const SampleResult alone = sample(logits.narrow(0, i, 1), p1, k1);
    CHECK(alone.tokens.item<int64_t>() == r.tokens[i].item<int64_t>());
    // Rows without top-k/top-p take the fused kernel alone and in this mixed batch alike: the
    // same bits (before the batch was split by kind, all its rows took the reference path).
    if (p[i].top_k == 0 && p[i].top_p == 1.0) CHECK(alone.logprobs.item<float>() == r.logprobs[i].item<float>());
    if (p[i].top_k > 0) {
      const at::Tensor kth = std::get<0>(at::topk(logits[i].to(at::kFloat), p[i].top_k)).min();
      CHECK(logits[i].to(at::kFloat)[r.tokens[i]].item<float>() >= kth.item<float>());
    }
  }
  // Reported log-probs: log softmax(logits / T) over the whole vocabulary (T = 1 for greedy).
  std::vector<float> inv_t;
  for (const auto& q : p) inv_t.push_back(q.temperature > 0 ? static_cast<float>(1.0 / q.temperature) : 1.0f);
  const at::Tensor scale = at::tensor(inv_t).to(at::kCUDA).unsqueeze(1);
  const at::Tensor want = at::log_softmax(logits.to(at::kFloat) * scale, 1).gather(1, r.tokens.unsqueeze(1)).squeeze(1);
  CHECK(at::allclose(r.logprobs, want, 0, 1e-5));
}

// The fused row kernel (rollout/cuda/sampler.cu) against sample_reference on the same device:
// the same noise (race_uniform), so the drawn token is the reference's own race winner; the
// two compute the race key x / T - log(-log U) with different float roundings (one fused pass
// vs log_softmax then add), so a token may differ only where two keys tie to ~1e-5. Log-probs:
// log softmax(logits / T) over the whole vocabulary to 1e-5. Vocabularies of 1, 17, 1025, 16389
// (strided rows) and 151936 entries, bf16 and fp32 logits, greedy and sampled rows.
TEST_CASE("sampler on CUDA: the fused kernel draws the reference's tokens and log-probs", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(5);
  int64_t rows_checked = 0, same = 0;
  // V = 16389: rows of a 16392-wide tensor (16-byte aligned rows, a partial last pack, 2 chunks).
  for (const int64_t V : {1, 17, 1025, 16389, 151936})
    for (const at::ScalarType dtype : {at::kBFloat16, at::kFloat})
      for (const int64_t S : {1, 7, 64}) {
        const int64_t width = V == 16389 ? 16392 : V;
        const at::Tensor logits =
            (at::randn({S, width}, at::TensorOptions().device(at::kCUDA).dtype(dtype)) * 4).narrow(1, 0, V);
        std::vector<SamplingParams> p;
        std::vector<SampleKey> k;
        for (int64_t i = 0; i < S; ++i) {
          p.push_back({i % 5 == 0 ? 0.0 : (i % 2 ? 1.0 : 0.7), 0, 1.0, 1234});
          k.push_back({static_cast<uint64_t>(i), 7 * i});
        }
        const SampleResult fused = sample(logits, p, k);
        const SampleResult ref = sample_reference(logits, p, k);
        for (int64_t i = 0; i < S; ++i) {
          const int64_t a = fused.tokens[i].item<int64_t>(), b = ref.tokens[i].item<int64_t>();
          ++rows_checked;
          if (a == b) {
            ++same;
            continue;
          }
          // A near-tie: the two race keys of the reference must be within rounding.
          const double t = p[i].temperature > 0 ? p[i].temperature : 1.0;
          const at::Tensor row = at::log_softmax(logits[i].to(at::kFloat) / t, 0).cpu();
          const uint64_t rs = row_seed(p[i].seed, k[i]);
          auto key = [&](int64_t v) {
            const double g = p[i].temperature > 0 ? -std::log(-std::log(static_cast<double>(race_uniform(rs, static_cast<uint64_t>(v))))) : 0.0;
            return row[v].item<double>() + g;
          };
          INFO("V " << V << " row " << i << ": fused " << a << " reference " << b);
          CHECK(std::abs(key(a) - key(b)) < 1e-4);
        }
        // Log-probs at each row's own temperature (greedy: T = 1).
        std::vector<float> inv_t;
        for (const auto& q : p) inv_t.push_back(q.temperature > 0 ? static_cast<float>(1.0 / q.temperature) : 1.0f);
        const at::Tensor want = at::log_softmax(logits.to(at::kFloat) * at::tensor(inv_t).to(at::kCUDA).unsqueeze(1), 1)
                                    .gather(1, fused.tokens.unsqueeze(1))
                                    .squeeze(1);
        CHECK(at::allclose(fused.logprobs, want, 0, 1e-5));
      }
  WARN("fused sampler: " << same << " of " << rows_checked << " rows drew exactly the reference's token");
  CHECK(same >= rows_checked - 2);
}

// The fused kernel with the extreme hash (tests/rollout/test_sampler.cpp says why): entry 7 of a
// 152K-entry bf16 row gets the largest hash and a logit 30 below the rest, and loses the race.
TEST_CASE("sampler on CUDA: a token with the extreme noise hash and a hopeless logit never wins", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  const int64_t V = 151936, hopeless = 7;
  const SampleKey key{2, 500};
  const uint64_t seed = testing::seed_for_hash(~0ull, hopeless, key);
  at::Tensor logits = at::zeros({1, V}, at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
  logits[0][hopeless] = -30.0f;
  const std::vector<SamplingParams> p{{1.0, 0, 1.0, seed}};
  const std::vector<SampleKey> k{key};
  CHECK(sample(logits, p, k).tokens.item<int64_t>() != hopeless);
  CHECK(sample_reference(logits, p, k).tokens.item<int64_t>() != hopeless);
}
