#include "rollout/sampler.h"

#include <limits>
#include <vector>

#include "core/util/error.h"
#include "core/util/log.h"
#include "rollout/race_noise.h"
#include "rollout/transfer.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "rollout/cuda/rollout_kernels.h"
#endif

namespace fp8rl::rollout {
namespace {

void check_params(const SamplingParams& p) {
  if (std::optional<std::string> e = sampling_params_error(p)) throw ConfigError(*e);
}

// 1 / temperature per row; greedy rows report log-probs at temperature 1.
float inverse_temperature(const SamplingParams& p) {
  return p.temperature > 0 ? static_cast<float>(1.0 / p.temperature) : 1.0f;
}

bool truncates(const SamplingParams& p, int64_t vocab) {
  return p.temperature > 0 && ((p.top_k > 0 && p.top_k < vocab) || p.top_p < 1.0);
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
    // The first entry explicitly: a top_p small enough that top_p * sum rounds to 0 in float
    // would otherwise keep nothing, and the race over all -inf would return token 0.
    at::Tensor keep_sorted = before < p.top_p * probs.sum();
    if (keep_sorted.numel() > 0) keep_sorted.narrow(0, 0, 1).fill_(true);
    const at::Tensor keep = at::empty_like(keep_sorted).scatter_(0, order, keep_sorted);
    out = at::where(keep, out, -std::numeric_limits<float>::infinity());
  }
  return out;
}

// -log(-log U_v) for v < V: the race's noise for one row, made on the host (rollout/race_noise.h)
// and uploaded without a stream sync.
at::Tensor race_noise(uint64_t seed, int64_t V, at::Device device) {
  std::vector<float> g(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) g[size_t(v)] = -std::log(-std::log(race_uniform(seed, static_cast<uint64_t>(v))));
  return upload(std::span<const float>(g), at::kFloat, device);
}

#ifdef FP8RL_WITH_CUDA
// One fused kernel for the whole batch (no row truncates). Three small host-to-device copies in,
// two [S] outputs.
SampleResult sample_fused(const at::Tensor& logits, std::span<const SamplingParams> params,
                          std::span<const SampleKey> keys) {
  const int64_t S = logits.size(0);
  std::vector<float> inv_t(static_cast<size_t>(S));
  std::vector<int64_t> seeds(static_cast<size_t>(S));  // uint64 bits in int64 (ATen has no uint64 tensor ops needed)
  std::vector<uint8_t> greedy(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    inv_t[s] = inverse_temperature(params[s]);
    seeds[s] = static_cast<int64_t>(row_seed(params[s].seed, keys[s]));
    greedy[s] = params[s].temperature == 0 ? 1 : 0;
  }
  // Asynchronous copies: a synchronous one would hold the host until the forward before it ends.
  const at::Device dev = logits.device();
  const at::Tensor inv_t_d = upload(std::span<const float>(inv_t), at::kFloat, dev);
  const at::Tensor seeds_d = upload(std::span<const int64_t>(seeds), at::kLong, dev);
  const at::Tensor greedy_d = upload(std::span<const uint8_t>(greedy), at::kByte, dev);
  const at::Tensor x = logits.stride(1) == 1 ? logits : logits.contiguous();
  SampleResult r;
  r.tokens = at::empty({S}, logits.options().dtype(at::kLong));
  r.logprobs = at::empty({S}, logits.options().dtype(at::kFloat));
  cuda::SampleArgs a;
  a.logits = x.data_ptr();
  a.dtype = x.scalar_type() == at::kFloat ? 0 : (x.scalar_type() == at::kBFloat16 ? 1 : 2);
  a.rows = S;
  a.vocab = x.size(1);
  a.row_stride = x.stride(0);
  a.inv_t = inv_t_d.data_ptr<float>();
  a.seeds = reinterpret_cast<const uint64_t*>(seeds_d.data_ptr<int64_t>());
  a.greedy = greedy_d.data_ptr<uint8_t>();
  a.tokens = r.tokens.data_ptr<int64_t>();
  a.logprobs = r.logprobs.data_ptr<float>();
  a.chunks = cuda::sample_chunks(a.vocab);
  const at::Tensor part = at::empty({3, S, a.chunks}, logits.options().dtype(at::kFloat));  // m, s, key
  const at::Tensor part_idx = at::empty({S, a.chunks}, logits.options().dtype(at::kLong));
  a.part_m = part[0].data_ptr<float>();
  a.part_s = part[1].data_ptr<float>();
  a.part_key = part[2].data_ptr<float>();
  a.part_idx = part_idx.data_ptr<int64_t>();
  cuda::sample_rows(a, at::cuda::getCurrentCUDAStream(dev.index()).stream());
  return r;
}
#endif

void check_inputs(const at::Tensor& logits, std::span<const SamplingParams> params, std::span<const SampleKey> keys) {
  FP8RL_CHECK(logits.dim() == 2, "sample: logits must be [S, V]");
  const int64_t S = logits.size(0);
  FP8RL_CHECK(static_cast<int64_t>(params.size()) == S && static_cast<int64_t>(keys.size()) == S,
              "sample: one SamplingParams and one SampleKey per row");
  for (const SamplingParams& p : params) check_params(p);
}

}  // namespace

std::optional<std::string> sampling_params_error(const SamplingParams& p) {
  if (!(p.temperature >= 0.0)) return cat("sampling: temperature must be >= 0 (0 = greedy), got ", p.temperature);
  if (p.temperature > 0 && !std::isfinite(static_cast<float>(1.0 / p.temperature)))
    return cat("sampling: temperature ", p.temperature, " is too small: 1 / temperature overflows float32");
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) return cat("sampling: top_p must be in (0, 1], got ", p.top_p);
  return std::nullopt;
}

uint64_t row_seed(uint64_t seed, const SampleKey& key) {
  return mix64(mix64(mix64(seed) ^ key.sample) ^ static_cast<uint64_t>(key.position));
}

SampleResult sample_reference(const at::Tensor& logits, std::span<const SamplingParams> params,
                              std::span<const SampleKey> keys) {
  check_inputs(logits, params, keys);
  const int64_t S = logits.size(0), V = logits.size(1);
  const auto f32 = logits.options().dtype(at::kFloat);
  std::vector<float> inv_t(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) inv_t[s] = inverse_temperature(params[s]);
  const at::Tensor scale = upload(std::span<const float>(inv_t), at::kFloat, logits.device()).unsqueeze(1);
  const at::Tensor logprob = at::log_softmax(logits.to(at::kFloat) * scale, -1);  // [S, V] fp32, full vocabulary

  std::vector<at::Tensor> tokens(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    const SamplingParams& p = params[s];
    const at::Tensor row = logprob[s];
    if (p.temperature == 0) {
      tokens[s] = row.argmax();
      continue;
    }
    const at::Tensor allowed = truncates(p, V) ? truncate(row, p) : row;
    tokens[s] = (allowed + race_noise(row_seed(p.seed, keys[s]), V, logits.device())).argmax();
  }
  SampleResult r;
  r.tokens = S == 0 ? at::empty({0}, logits.options().dtype(at::kLong)) : at::stack(tokens).to(at::kLong);
  r.logprobs = S == 0 ? at::empty({0}, f32) : logprob.gather(1, r.tokens.unsqueeze(1)).squeeze(1);
  return r;
}

SampleResult sample(const at::Tensor& logits, std::span<const SamplingParams> params, std::span<const SampleKey> keys) {
  check_inputs(logits, params, keys);
#ifdef FP8RL_WITH_CUDA
  const at::ScalarType t = logits.scalar_type();
  if (logits.is_cuda() && logits.size(0) > 0 && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf)) {
    const int64_t S = logits.size(0), V = logits.size(1);
    std::vector<int64_t> plain, truncating;  // row indices
    for (int64_t s = 0; s < S; ++s) (truncates(params[s], V) ? truncating : plain).push_back(s);
    if (truncating.empty()) return sample_fused(logits, params, keys);
    // A batch mixing both kinds: each row on its own kind's path, so that a row's draw and the
    // bits of its log-prob do not depend on its neighbours' sampling settings (sampler.h).
    if (!plain.empty()) {
      SampleResult r;
      r.tokens = at::empty({S}, logits.options().dtype(at::kLong));
      r.logprobs = at::empty({S}, logits.options().dtype(at::kFloat));
      for (const bool fused : {true, false}) {
        const std::vector<int64_t>& rows = fused ? plain : truncating;
        std::vector<SamplingParams> p;
        std::vector<SampleKey> k;
        for (const int64_t s : rows) {
          p.push_back(params[s]);
          k.push_back(keys[s]);
        }
        const at::Tensor idx = upload(std::span<const int64_t>(rows), at::kLong, logits.device());
        const at::Tensor part = logits.index_select(0, idx);
        const SampleResult got = fused ? sample_fused(part, p, k) : sample_reference(part, p, k);
        r.tokens.index_copy_(0, idx, got.tokens);
        r.logprobs.index_copy_(0, idx, got.logprobs);
      }
      return r;
    }
  }
#endif
  return sample_reference(logits, params, keys);
}

}  // namespace fp8rl::rollout
