#include "rollout/sampler.h"

#include <ATen/Context.h>

#include <mutex>
#include <vector>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::rollout {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A fresh generator of the logits' device type, seeded for one row. Cloned from the device's
// default generator (so no CUDA header is needed here) and re-seeded, which also resets the
// Philox offset on CUDA: the row's stream starts from the same place whatever ran before.
at::Generator row_generator(at::Device device, uint64_t seed) {
  at::Generator g = at::globalContext().defaultGenerator(device).clone();
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_current_seed(seed);
  return g;
}

void check_params(const SamplingParams& p) {
  if (!(p.temperature >= 0.0))
    throw ConfigError(cat("sampling: temperature must be >= 0 (0 = greedy), got ", p.temperature));
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) throw ConfigError(cat("sampling: top_p must be in (0, 1], got ", p.top_p));
}

// logprob [V] float32 with the tokens outside top-k / top-p set to -inf. Ties at the k-th value
// are all kept (the cut is by value, so it does not depend on sort stability).
at::Tensor truncate(const at::Tensor& logprob, const SamplingParams& p) {
  const int64_t V = logprob.size(0);
  at::Tensor out = logprob;
  if (p.top_k > 0 && p.top_k < V) {
    const at::Tensor kth = std::get<0>(at::topk(logprob, p.top_k)).min();
    out = at::where(logprob >= kth, logprob, -std::numeric_limits<float>::infinity());
  }
  if (p.top_p < 1.0) {
    const auto [sorted, order] = at::sort(out, /*dim=*/0, /*descending=*/true);
    const at::Tensor probs = sorted.exp();
    // Mass strictly before each token; keep a token while that mass is < top_p (the first token
    // is always kept, and the set is the smallest whose mass reaches top_p).
    const at::Tensor before = probs.cumsum(0) - probs;
    const at::Tensor keep_sorted = before < p.top_p * probs.sum();
    const at::Tensor keep = at::empty_like(keep_sorted).scatter_(0, order, keep_sorted);
    out = at::where(keep, out, -std::numeric_limits<float>::infinity());
  }
  return out;
}

}  // namespace

uint64_t row_seed(uint64_t seed, const SampleKey& key) {
  return splitmix64(splitmix64(splitmix64(seed) ^ key.sample) ^ static_cast<uint64_t>(key.position));
}

SampleResult sample(const at::Tensor& logits, std::span<const SamplingParams> params, std::span<const SampleKey> keys) {
  FP8RL_CHECK(logits.dim() == 2, "sample: logits must be [S, V]");
  const int64_t S = logits.size(0);
  FP8RL_CHECK(static_cast<int64_t>(params.size()) == S && static_cast<int64_t>(keys.size()) == S,
              "sample: one SamplingParams and one SampleKey per row");
  for (const SamplingParams& p : params) check_params(p);
  const auto f32 = logits.options().dtype(at::kFloat);
  // Per-row temperature; greedy rows report log-probs at temperature 1.
  std::vector<float> inv_t(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) inv_t[s] = params[s].temperature > 0 ? static_cast<float>(1.0 / params[s].temperature) : 1.0f;
  const at::Tensor scale = at::tensor(inv_t, at::TensorOptions().dtype(at::kFloat)).to(logits.device()).unsqueeze(1);
  const at::Tensor logprob = at::log_softmax(logits.to(at::kFloat) * scale, -1);  // [S, V] fp32, full vocabulary

  std::vector<at::Tensor> tokens(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    const SamplingParams& p = params[s];
    const at::Tensor row = logprob[s];
    if (p.temperature == 0) {
      tokens[s] = row.argmax();
      continue;
    }
    const at::Tensor allowed = truncate(row, p);
    at::Generator gen = row_generator(logits.device(), row_seed(p.seed, keys[s]));
    // Exponential race: argmax(logprob - log E), E ~ Exp(1), E = -log(U), U in (0, 1).
    const at::Tensor u = at::rand({row.size(0)}, gen, f32).clamp_min(std::numeric_limits<float>::min());
    tokens[s] = (allowed - at::log(-at::log(u))).argmax();
  }
  SampleResult r;
  r.tokens = S == 0 ? at::empty({0}, logits.options().dtype(at::kLong)) : at::stack(tokens).to(at::kLong);
  r.logprobs = S == 0 ? at::empty({0}, f32) : logprob.gather(1, r.tokens.unsqueeze(1)).squeeze(1);
  return r;
}

}  // namespace fp8rl::rollout
