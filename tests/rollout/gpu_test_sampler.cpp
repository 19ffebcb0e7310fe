// The sampler on CUDA: the per-row generators (cloned from the CUDA default generator and
// re-seeded) give batch-independent draws, greedy is argmax, log-probs are the full-vocabulary
// log softmax, and top-k holds, at a real vocabulary size.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <vector>

#include "rollout/sampler.h"
#include "tests/catch.h"

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
    CHECK(sample(logits.narrow(0, i, 1), p1, k1).tokens.item<int64_t>() == r.tokens[i].item<int64_t>());
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
