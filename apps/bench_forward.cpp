#include "apps/bench_forward.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <unistd.h>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/model/decoder.h"
#include "core/model/random_checkpoint.h"
#include "core/recipe/model_presets.h"
#include "loss/logprobs.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace fp8rl {

#ifndef FP8RL_WITH_CUDA

std::string run_forward_bench(const ForwardBenchOptions&) {
  throw RuntimeFailure("bench forward needs a CUDA build of fp8rl (scripts/setup.sh with FP8RL_CUDA=ON) and a GPU");
}

#else

namespace {

// The model's attention before it took packed tokens: every row of the padded [B, T] batch is a
// "sequence" of T tokens (pads included) and a dense [B, 1, T, T] mask keeps pads out of the keys.
class DenseMaskAttention final : public model::Attention {
 public:
  DenseMaskAttention(at::Tensor mask, int64_t batch, int64_t seq) : mask_(std::move(mask)), B_(batch), T_(seq) {}
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const model::AttentionContext&,
                     int64_t) override {
    const int64_t hq = q.size(1), hkv = k.size(1), D = q.size(2);
    auto heads = [&](const at::Tensor& x) { return x.view({B_, T_, x.size(1), D}).transpose(1, 2); };  // [B, H, T, D]
    at::Tensor kk = heads(k), vv = heads(v);
    if (hq != hkv) {
      kk = at::repeat_interleave(kk, hq / hkv, 1);
      vv = at::repeat_interleave(vv, hq / hkv, 1);
    }
    const at::Tensor o = at::scaled_dot_product_attention(heads(q), kk, vv, mask_, 0.0, false,
                                                          1.0 / std::sqrt(static_cast<double>(D)));
    return o.transpose(1, 2).reshape({B_ * T_, hq, D});
  }

 private:
  at::Tensor mask_;  // [B, 1, T, T] bool
  int64_t B_, T_;
};

struct Row {
  std::string name;
  double median_ms = 0;
  double tokens_per_s = 0;
  double peak_gib = 0;  // above what was allocated before the step
  std::string error;
};

void clear_grads(const model::CausalLM& m) {
  m.visit([](const model::ModelTensor& t) {
    at::Tensor handle = t.tensor;  // shares the TensorImpl: resetting its grad frees the gradient
    if (t.role == model::TensorRole::trainable) handle.mutable_grad() = at::Tensor();
  });
}

int64_t allocated_bytes() { return c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current; }
int64_t peak_bytes() { return c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak; }

// Median wall time of `reps` steps (after one warm-up), each synchronised, with peak memory.
Row time_steps(const std::string& name, const model::CausalLM& m, const std::function<at::Tensor()>& loss, int reps,
               int64_t real_tokens) {
  Row row{name};
  std::vector<double> ms;
  try {
    for (int i = 0; i <= reps; ++i) {
      clear_grads(m);
      c10::cuda::device_synchronize();
      c10::cuda::CUDACachingAllocator::resetPeakStats(0);
      const int64_t before = allocated_bytes();
      const auto t0 = std::chrono::steady_clock::now();
      loss().backward();
      c10::cuda::device_synchronize();
      const auto t1 = std::chrono::steady_clock::now();
      if (i == 0) continue;  // warm-up: allocator growth, kernel selection
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      row.peak_gib = std::max(row.peak_gib, static_cast<double>(peak_bytes() - before) / (1 << 30));
    }
  } catch (const c10::OutOfMemoryError&) {
    row.error = "out of memory";
    clear_grads(m);
    c10::cuda::CUDACachingAllocator::emptyCache();
    return row;
  }
  std::sort(ms.begin(), ms.end());
  row.median_ms = ms[ms.size() / 2];
  row.tokens_per_s = static_cast<double>(real_tokens) / (row.median_ms / 1000.0);
  return row;
}

}  // namespace

std::string run_forward_bench(const ForwardBenchOptions& o) {
  if (!at::cuda::is_available()) throw RuntimeFailure("bench forward: no CUDA device");
  auto shape = recipe::qwen3_preset(o.preset);
  if (!shape) throw ConfigError("bench forward: unknown --preset '" + o.preset + "'");
  if (o.batch < 1 || o.seq < 1 || o.min_len < 1 || o.min_len > o.seq || o.reps < 1)
    throw ConfigError("bench forward: need --batch, --seq, --reps >= 1 and 1 <= --min-len <= --seq");

  // A random checkpoint on disk, loaded as training loads one (BF16, every tensor trainable).
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / cat("fp8rl-bench-forward-", getpid());
  log::info(cat("bench forward: writing a random Qwen3-", o.preset, " checkpoint to ", dir.string()));
  model::write_random_checkpoint(dir.string(), "qwen3", *shape, o.seed);
  model::LoadOptions lo;
  lo.dtype = at::kBFloat16;
  lo.device = at::Device(at::kCUDA, 0);
  lo.requires_grad = true;
  const model::CausalLM m = model::CausalLM::load(dir.string(), lo);
  // The same weights with q/k/v and gate/up as separate projections, as the model ran before.
  model::LoadOptions split_lo = lo;
  split_lo.fuse = [](const model::ProjectionGroup&, const model::WeightReader&) { return false; };
  const model::CausalLM m_split = model::CausalLM::load(dir.string(), split_lo);
  std::filesystem::remove_all(dir);

  // Lengths uniform in [min_len, seq]; ids and targets uniform over the vocabulary.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 1);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const at::Tensor len_t = at::randint(o.min_len, o.seq + 1, {o.batch}, gen, i64);
  const std::vector<int64_t> lengths(len_t.data_ptr<int64_t>(), len_t.data_ptr<int64_t>() + o.batch);
  int64_t N = 0;
  for (int64_t l : lengths) N += l;
  const int64_t B = o.batch, T = o.seq, V = shape->vocab_size;
  const at::Device dev = lo.device;
  const at::Tensor padded_ids = at::randint(V, {B, T}, gen, i64).to(dev);
  const at::Tensor targets_padded = at::randint(V, {B, T}, gen, i64).to(dev);
  const at::Tensor valid = (at::arange(T, i64).unsqueeze(0) < len_t.unsqueeze(1)).to(dev);  // [B, T] right padding
  const at::Tensor rows = valid.reshape({-1}).nonzero().squeeze(1);                         // [N] real tokens
  const at::Tensor ids = padded_ids.reshape({-1}).index_select(0, rows);
  const at::Tensor targets = targets_padded.reshape({-1}).index_select(0, rows);
  const at::Tensor positions_padded = at::arange(T, i64.device(dev)).repeat({B});
  const at::Tensor positions = positions_padded.index_select(0, rows);
  constexpr int64_t kChunk = 1024;

  // Before: [B, T] with the dense mask the model used to build (causal & real keys, | self so a
  // pad row is never all-masked), layers over all B*T tokens.
  const auto bool_opts = at::TensorOptions().dtype(at::kBool).device(dev);
  const at::Tensor mask = ((at::ones({T, T}, bool_opts).tril().unsqueeze(0) & valid.unsqueeze(1)) |
                           at::eye(T, bool_opts).unsqueeze(0))
                              .unsqueeze(1);  // [B, 1, T, T]
  DenseMaskAttention dense(mask, B, T);
  const std::vector<int64_t> full(static_cast<size_t>(B), T);
  const model::AttentionContext padded_ctx = model::whole_sequences(full, dev, &dense);
  auto padded_loss = [&] {
    const at::Tensor h =
        m_split.forward(padded_ids.reshape({-1}), positions_padded, padded_ctx).index_select(0, rows);
    return loss::chunked_logprobs_entropy(h, m_split.lm_head_weight(), targets, kChunk).logprobs.sum();
  };
  // After: the real tokens packed, flash varlen attention; with split and with fused projections.
  model::VarlenAttention varlen;
  const model::AttentionContext packed_ctx = model::whole_sequences(lengths, dev, &varlen);
  auto packed_loss = [&](const model::CausalLM& model) {
    return [&] {
      const at::Tensor h = model.forward(ids, positions, packed_ctx);
      return loss::chunked_logprobs_entropy(h, model.lm_head_weight(), targets, kChunk).logprobs.sum();
    };
  };

  std::vector<Row> table;
  table.push_back(time_steps("padded [B, T] + dense mask, split q/k/v, gate/up (before)", m_split, padded_loss, o.reps, N));
  table.push_back(time_steps("packed + flash varlen, split q/k/v, gate/up", m_split, packed_loss(m_split), o.reps, N));
  table.push_back(time_steps("packed + flash varlen, fused qkv, gate_up (after)", m, packed_loss(m), o.reps, N));

  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::ostringstream r;
  r << std::fixed;
  r << "### forward + backward, Qwen3-" << o.preset << " shape, BF16, full fine-tuning\n\n"
    << "Device: " << prop.name << ". Batch " << B << " sequences, lengths uniform in [" << o.min_len << ", " << T
    << "] (" << N << " real tokens of " << B * T << " padded, " << std::setprecision(0)
    << 100.0 * static_cast<double>(N) / static_cast<double>(B * T) << "%); median of " << o.reps
    << " steps; loss = sum of chunked token log-probs (lm_head included).\n\n"
    << "| attention | step ms (median) | real tokens/s | peak memory above weights, GiB |\n|---|---:|---:|---:|\n";
  for (const Row& row : table) {
    if (!row.error.empty()) {
      r << "| " << row.name << " | " << row.error << " | | |\n";
      continue;
    }
    r << "| " << row.name << " | " << std::setprecision(1) << row.median_ms << " | " << std::setprecision(0)
      << row.tokens_per_s << " | " << std::setprecision(2) << row.peak_gib << " |\n";
  }
  if (table[0].error.empty() && table[1].error.empty() && table[2].error.empty())
    r << "\nSame run: packed vs padded " << std::setprecision(2) << table[0].median_ms / table[1].median_ms
      << "x faster, " << table[1].peak_gib / table[0].peak_gib << "x the peak memory; fused vs split projections "
      << table[1].median_ms / table[2].median_ms << "x faster, " << table[2].peak_gib / table[1].peak_gib
      << "x the peak memory; after vs before " << table[0].median_ms / table[2].median_ms << "x faster.\n";
  return r.str();
}

#endif

}  // namespace fp8rl
