#include "apps/bench_rollout.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <random>
#include <sstream>
#include <unistd.h>

#include "core/model/decoder.h"
#include "core/model/random_checkpoint.h"
#include "core/recipe/model_presets.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "quant/fp8_model.h"
#include "rollout/engine.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace fp8rl {

#ifndef FP8RL_WITH_CUDA

std::string run_rollout_bench(const RolloutBenchOptions&) {
  throw RuntimeFailure("bench rollout needs a CUDA build of fp8rl (scripts/setup.sh with FP8RL_CUDA=ON) and a GPU");
}

#else

namespace {

struct Cell {
  std::string weights;
  int64_t batch = 0;
  double tokens_per_s = 0, ms_per_step = 0, seconds = 0, peak_gib = 0, weight_gib = 0, bw_frac = 0;
  int64_t steps = 0, kv_blocks = 0;
};

// Device-to-device copy bandwidth (bytes read + written per second) of a 1 GiB copy, median of 5.
double copy_bandwidth() {
  const int64_t n = int64_t{1} << 30;
  at::Tensor a = at::empty({n}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA)).fill_(1);
  at::Tensor b = at::empty_like(a);
  std::vector<double> s;
  for (int i = 0; i < 6; ++i) {
    c10::cuda::device_synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    b.copy_(a);
    c10::cuda::device_synchronize();
    if (i > 0) s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return 2.0 * static_cast<double>(n) / s[s.size() / 2];
}

int64_t weight_bytes(const model::CausalLM& m) {
  int64_t bytes = 0;
  m.visit([&](const model::ModelTensor& t) {
    // A decode step reads every weight once, except the embedding table (a gather of a few rows)
    // when lm_head has its own.
    if (t.role == model::TensorRole::buffer) return;
    if (t.name == "model.embed_tokens.weight" && !m.config().shape.tie_word_embeddings) return;
    bytes += static_cast<int64_t>(t.tensor.nbytes());
  });
  return bytes;
}

std::vector<rollout::GenerateRequest> make_requests(int64_t batch, const RolloutBenchOptions& o, int64_t vocab,
                                                   int64_t gen_len) {
  const int64_t n = batch >= o.n ? o.n : 1;
  const int64_t prompts = std::max<int64_t>(1, batch / n);
  std::mt19937_64 rng(o.seed + 17);
  std::vector<rollout::GenerateRequest> r;
  for (int64_t p = 0; p < prompts; ++p) {
    rollout::GenerateRequest g;
    for (int64_t t = 0; t < o.prompt_len; ++t) g.prompt.push_back(static_cast<rollout::TokenId>(rng() % vocab));
    g.params.n = static_cast<int32_t>(n);
    g.params.max_new_tokens = static_cast<int32_t>(gen_len);
    g.sampling = {1.0, 0, 1.0, o.seed + static_cast<uint64_t>(p)};
    r.push_back(std::move(g));
  }
  return r;
}

}  // namespace

std::string run_rollout_bench(const RolloutBenchOptions& o) {
  if (!at::cuda::is_available()) throw RuntimeFailure("bench rollout: no CUDA device");
  auto shape = recipe::qwen3_preset(o.preset);
  if (!shape) throw ConfigError("bench rollout: unknown --preset '" + o.preset + "'");
  const double copy_bw = copy_bandwidth();
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / cat("fp8rl-bench-rollout-", getpid());
  log::info(cat("bench rollout: writing a random Qwen3-", o.preset, " checkpoint to ", dir.string()));
  model::write_random_checkpoint(dir.string(), "qwen3", *shape, o.seed);
  model::LoadOptions lo;
  lo.dtype = at::kBFloat16;
  lo.device = at::Device(at::kCUDA, 0);
  std::vector<Cell> cells;
  for (const char* weights : {"bf16", "fp8"}) {
    recipe::QuantizationConfig q;
    if (std::string(weights) == "bf16") q.quant_method = "none";
    c10::cuda::CUDACachingAllocator::emptyCache();
    const model::CausalLM m = quant::load_causal_lm(dir.string(), q, lo);
    const int64_t wbytes = weight_bytes(m);
    rollout::EngineConfig ec;
    ec.max_num_seqs = 512;
    rollout::Engine engine(m, ec);
    engine.generate(make_requests(2, o, shape->vocab_size, 8));  // warm-up: kernels, plans, allocator
    for (const int64_t batch : o.batches) {
      c10::cuda::device_synchronize();
      c10::cuda::CUDACachingAllocator::resetPeakStats(0);
      const auto reqs = make_requests(batch, o, shape->vocab_size, o.gen_len);
      engine.generate(reqs);
      const rollout::EngineStats& st = engine.last_stats();
      Cell c;
      c.weights = weights;
      c.batch = batch;
      c.seconds = st.seconds;
      c.steps = st.steps;
      c.kv_blocks = st.kv_blocks;
      c.tokens_per_s = static_cast<double>(st.generated_tokens) / st.seconds;
      c.ms_per_step = 1000.0 * st.seconds / static_cast<double>(std::max<int64_t>(st.steps, 1));
      c.peak_gib = static_cast<double>(c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak) /
                   (1 << 30);
      c.weight_gib = static_cast<double>(wbytes) / (1 << 30);
      // Bytes a decode step must read, at the mean context, over the mean step time.
      const int64_t seqs = static_cast<int64_t>(reqs.size()) * reqs[0].params.n;
      const double kv_per_token = 2.0 * shape->num_hidden_layers * shape->num_key_value_heads * shape->head_dim * 2;
      const double kv_read = static_cast<double>(seqs) * (static_cast<double>(o.prompt_len) + o.gen_len / 2.0) * kv_per_token;
      c.bw_frac = (static_cast<double>(wbytes) + kv_read) / (c.ms_per_step / 1000.0) / copy_bw;
      cells.push_back(c);
      log::info(cat("bench rollout: ", weights, " batch ", batch, ": ", static_cast<int64_t>(c.tokens_per_s),
                    " tokens/s, ", c.ms_per_step, " ms/step"));
    }
  }
  std::filesystem::remove_all(dir);

  std::ostringstream r;
  r << std::fixed;
  r << "### rollout, Qwen3-" << o.preset << " shape, random weights\n\nDevice: " << at::cuda::getCurrentDeviceProperties()->name
    << ". Prompts of " << o.prompt_len << " tokens, n = " << o.n << " samples per prompt (batch 1: n = 1), "
    << o.gen_len << " generated tokens per sample, temperature 1; one rollout per cell after a warm-up. "
    << "Copy bandwidth measured in this run: " << std::setprecision(0) << copy_bw / 1e9 << " GB/s.\n\n"
    << "| weights | batch | generated tokens/s | ms/step | steps | weights GiB | peak GiB | step bytes / copy bandwidth |\n"
    << "|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Cell& c : cells)
    r << "| " << c.weights << " | " << c.batch << " | " << std::setprecision(0) << c.tokens_per_s << " | "
      << std::setprecision(1) << c.ms_per_step << " | " << c.steps << " | " << std::setprecision(2) << c.weight_gib << " | "
      << c.peak_gib << " | " << std::setprecision(0) << 100.0 * c.bw_frac << "% |\n";
  const size_t nb = o.batches.size();
  r << "\nFP8 / BF16 tokens/s (same run):";
  for (size_t i = 0; i < nb && nb + i < cells.size(); ++i)
    r << " batch " << cells[i].batch << " " << std::setprecision(2) << cells[nb + i].tokens_per_s / cells[i].tokens_per_s << "x;";
  r << "\n";
  return r.str();
}

#endif

}  // namespace fp8rl
