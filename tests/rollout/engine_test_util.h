// Helpers of the engine tests (CPU and GPU): seeded random prompts and the trainer-side
// reference, log softmax(logits / T) of generated tokens by one whole-sequence forward.
#pragma once

#include <ATen/ATen.h>

#include <random>
#include <vector>

#include "core/model/decoder.h"
#include "rollout/block_pool.h"

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

}  // namespace fp8rl::test
