// Helpers of the engine tests (CPU and GPU): seeded random prompts and the trainer-side
// reference, log softmax(logits / T) of generated tokens by one whole-sequence forward.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/model/decoder.h"
#include "rollout/block_pool.h"
#include "rollout/engine.h"
#include "tests/catch.h"

namespace fp8rl::test {

inline std::vector<rollout::TokenId> random_prompt(int64_t len, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<rollout::TokenId> p;
  for (int64_t i = 0; i < len; ++i) p.push_back(static_cast<rollout::TokenId>(rng() % static_cast<uint64_t>(vocab)));
  return p;
}

// log softmax(logits / T)[token] of every generated token, in fp32, by the trainer's
// whole-sequence forward on the model's device.
inline std::vector<float> recompute_logprobs(const model::CausalLM& m, const std::vector<rollout::TokenId>& prompt,
                                             const std::vector<rollout::TokenId>& gen, double temperature = 1.0) {
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  ids.insert(ids.end(), gen.begin(), gen.end());
  const at::Tensor logits = m.logits(at::tensor(ids).unsqueeze(0).to(m.device()))[0].to(at::kFloat);  // [T, V]
  const at::Tensor lp = at::log_softmax(logits / temperature, -1).cpu();
  std::vector<float> out;
  for (size_t i = 0; i < gen.size(); ++i) out.push_back(lp[static_cast<int64_t>(prompt.size() + i) - 1][gen[i]].item<float>());
  return out;
}

// |engine log-prob - trainer recompute| over every generated token of every sample of `out`
// (the answers to `reqs`), each sample required to hold its request's max_new_tokens tokens.
struct LogprobGap {
  double max = 0, mean = 0;
};
inline LogprobGap logprob_gap(const model::CausalLM& m, const std::vector<rollout::GenerateRequest>& reqs,
                              const std::vector<rollout::GenerateOutput>& out) {
  LogprobGap g;
  double sum = 0;
  int64_t count = 0;
  for (size_t i = 0; i < reqs.size(); ++i)
    for (const rollout::SampleOutput& s : out[i].output.samples) {
      REQUIRE(s.tokens.size() == static_cast<size_t>(reqs[i].params.max_new_tokens));
      const std::vector<float> lp = recompute_logprobs(m, reqs[i].prompt, s.tokens);
      for (size_t t = 0; t < lp.size(); ++t) {
        const double d = std::abs(static_cast<double>(s.logprobs[t]) - lp[t]);
        g.max = std::max(g.max, d);
        sum += d;
        ++count;
      }
    }
  g.mean = count > 0 ? sum / static_cast<double>(count) : 0.0;
  return g;
}

}  // namespace fp8rl::test
