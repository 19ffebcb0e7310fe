#include "apps/bench_rollout.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <unistd.h>

#include "apps/kernel_profile.h"
#include "core/model/decoder.h"
#include "core/model/model_config.h"
#include "core/model/random_checkpoint.h"
#include "core/recipe/model_presets.h"
#include "core/util/env.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/pdl.h"
#include "quant/fp8_model.h"
#include "rollout/engine.h"
#include "rollout/kv_cache.h"
#include "rollout/paged_attention.h"

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

// How decode steps run: CUDA graphs or eager launches; the host waiting for each step's tokens or
// one step in flight (rollout.async_scheduling); each sequence reading its own keys or a
// prompt's samples reading its shared blocks together (rollout.shared_prefix_decode).
struct Mode {
  bool eager = false, async = false, shared_prefix = false;
  const char* name() const {
    return eager ? "eager" : (async ? "graphs + async" : (shared_prefix ? "graphs + shared prefix" : "graphs"));
  }
};

struct Cell {
  std::string weights;
  Mode mode;
  int64_t batch = 0;
  double tokens_per_s = 0, ms_per_step = 0, seconds = 0, peak_gib = 0, weight_gib = 0, bw_frac = 0;
  double graph_gpu_ms = 0;  // GPU ms per replayed decode step (0: no graph steps)
  double prefill_tokens_per_s = 0;  // prompt tokens through the forward per second (one new token each)
  std::string profile;      // Markdown section, with options.profile
  int64_t steps = 0, kv_blocks = 0, graph_steps = 0, mixed_steps = 0;
  // Shared-prefix decode: key reads (per layer and KV head) saved per step, and their share of
  // the keys a step reads at the mean context: whether the prefix pass had anything to share.
  double shared_keys_per_step = 0, shared_keys_frac = 0;
  double capture_s = 0;  // of the median rollout: capturing its decode graphs (wall)
  // Outside the graph per graph step (synchronous cells with graph steps; else NaN): the graph
  // steps' wall time (the rollout's, less its eager steps and graph captures) per step, less the
  // GPU time inside their replays. The host's work, the input copies, and the sampler's kernels
  // (they run after the replay: the graph ends at the logits).
  double outside_graph_ms = std::nan("");
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

// `batch` samples: batch / n prompts of random tokens (drawn from `prompt_seed`), n samples each.
std::vector<rollout::GenerateRequest> make_requests(int64_t batch, const RolloutBenchOptions& o, int64_t vocab,
                                                   int64_t gen_len, uint64_t prompt_seed = 17) {
  const int64_t n = batch >= o.n ? o.n : 1;
  const int64_t prompts = std::max<int64_t>(1, batch / n);
  std::mt19937_64 rng(o.seed + prompt_seed);
  std::vector<rollout::GenerateRequest> r;
  for (int64_t p = 0; p < prompts; ++p) {
    rollout::GenerateRequest g;
    for (int64_t t = 0; t < o.prompt_len; ++t) g.prompt.push_back(static_cast<rollout::TokenId>(rng() % vocab));
    g.params.n = static_cast<int32_t>(n);
    // --gen-len-min: lengths spread over [min, gen_len] by prompt (the warm-up and prefill-only
    // rollouts ask for fewer tokens than gen_len and keep theirs).
    const int64_t lo = o.gen_len_min > 0 && gen_len == o.gen_len ? std::min(o.gen_len_min, gen_len) : gen_len;
    const int64_t len = prompts > 1 ? lo + (gen_len - lo) * p / (prompts - 1) : gen_len;
    g.params.max_new_tokens = static_cast<int32_t>(len);
    g.sampling = {1.0, 0, 1.0, o.seed + static_cast<uint64_t>(p)};
    r.push_back(std::move(g));
  }
  return r;
}

}  // namespace

std::string run_rollout_bench(const RolloutBenchOptions& o) {
  if (!at::cuda::is_available()) throw RuntimeFailure("bench rollout: no CUDA device");
  // --model: a checkpoint on disk (read, never written or removed); else a random one at the
  // preset's shape in a temporary directory (writing 16 GB of Qwen3-8B takes over a minute, so
  // before/after runs can share one through `fp8rl init` and --model).
  const bool own_dir = o.model_dir.empty();
  std::optional<hf::ModelShape> shape;
  if (own_dir) {
    shape = recipe::qwen3_preset(o.preset);
    if (!shape) throw ConfigError("bench rollout: unknown --preset '" + o.preset + "'");
  } else {
    shape = model::read_model_config(o.model_dir).shape;
  }
  const double copy_bw = copy_bandwidth();
  const std::filesystem::path dir =
      own_dir ? std::filesystem::temp_directory_path() / cat("fp8rl-bench-rollout-", getpid()) : std::filesystem::path(o.model_dir);
  if (own_dir) {
    log::info(cat("bench rollout: writing a random Qwen3-", o.preset, " checkpoint to ", dir.string()));
    model::write_random_checkpoint(dir.string(), "qwen3", *shape, o.seed);
  }
  model::LoadOptions lo;
  lo.dtype = at::kBFloat16;
  lo.device = at::Device(at::kCUDA, 0);
  struct Config {
    const char* name;
    const char* key;  // its name for --configs
    bool fp8_weights, fp8_kv;
  };
  // The weight / KV configurations --configs names (all three unless it says otherwise), in this order.
  const Config all_configs[] = {
      {"bf16", "bf16", false, false}, {"fp8", "fp8", true, false}, {"fp8 + fp8 KV", "fp8-kv", true, true}};
  std::vector<Config> configs;
  for (const Config& c : all_configs)
    if (o.configs.empty() || std::find(o.configs.begin(), o.configs.end(), c.key) != o.configs.end())
      configs.push_back(c);
  if (configs.empty()) throw ConfigError("bench rollout: --configs takes bf16, fp8 and fp8-kv");
  // The index in `configs` of the configuration --configs calls `key`, or -1 when it left it out.
  const auto config_index = [&](const char* key) -> int {
    for (size_t k = 0; k < configs.size(); ++k)
      if (std::string(configs[k].key) == key) return static_cast<int>(k);
    return -1;
  };
  std::vector<Mode> modes{Mode{}};
  if (o.compare_eager) modes.push_back(Mode{true, false});
  if (o.compare_async) modes.push_back(Mode{false, true});
  if (o.compare_shared_prefix) modes.push_back(Mode{false, false, true});
  std::vector<Cell> cells;
  std::vector<int64_t> kv_tokens;  // per config: KV slots that fit at gpu_memory_utilization 0.9
  std::unique_ptr<model::CausalLM> m;
  bool loaded_fp8 = false;
  for (const Config& cfg : configs) {
    if (!m || loaded_fp8 != cfg.fp8_weights) {
      m.reset();
      c10::cuda::CUDACachingAllocator::emptyCache();
      recipe::QuantizationConfig q;
      if (!cfg.fp8_weights) q.quant_method = "none";
      q.weight_scaling = o.weight_scaling;
      q.activation_scaling = recipe::paired_activation_scaling(o.weight_scaling);
      m = std::make_unique<model::CausalLM>(quant::load_causal_lm(dir.string(), q, lo));
      loaded_fp8 = cfg.fp8_weights;
    }
    const int64_t wbytes = weight_bytes(*m);
    {
      c10::cuda::device_synchronize();
      const rollout::KvCacheShape kv{shape->num_hidden_layers, shape->num_key_value_heads, shape->head_dim, 16,
                                     at::kBFloat16, lo.device, cfg.fp8_kv};
      kv_tokens.push_back(rollout::KvCache::blocks_that_fit(kv, 0.9, 0) * 16);
    }
    for (const Mode mode : modes) {
      for (const int64_t batch : o.batches) {
        rollout::EngineConfig ec;
        ec.max_num_seqs = static_cast<int32_t>(o.max_num_seqs);
        ec.enforce_eager = mode.eager;
        ec.async_scheduling = mode.async;
        // The plain cells of --compare-shared-prefix run without it; else the engine's default rule.
        using SharedPrefix = rollout::EngineConfig::SharedPrefixDecode;
        ec.shared_prefix_decode = mode.shared_prefix          ? SharedPrefix::on
                                  : o.compare_shared_prefix ? SharedPrefix::off
                                                            : rollout::EngineConfig{}.shared_prefix_decode;
        ec.fp8_kv_cache = cfg.fp8_kv;
        rollout::Engine engine(*m, ec);
        engine.generate(make_requests(std::min<int64_t>(batch, 2), o, shape->vocab_size, 8));  // warm-up: kernels, plans, allocator
        const auto reqs = make_requests(batch, o, shape->vocab_size, o.gen_len);
        std::vector<rollout::EngineStats> runs;
        double peak = 0;
        for (int64_t rep = 0; rep < o.reps; ++rep) {
          c10::cuda::device_synchronize();
          c10::cuda::CUDACachingAllocator::resetPeakStats(0);
          engine.generate(reqs);
          runs.push_back(engine.last_stats());
          peak = std::max(peak, static_cast<double>(c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak));
        }
        // The median rollout by time (the faster middle one of an even count: with kept graphs the
        // first timed rollout may still capture, and of two it would be the slower), and every
        // per-step figure from that same rollout.
        std::sort(runs.begin(), runs.end(),
                  [](const rollout::EngineStats& a, const rollout::EngineStats& b) { return a.seconds < b.seconds; });
        const rollout::EngineStats st = runs[(runs.size() - 1) / 2];
        // Prefill alone: the same number of prompts, new ones each time (the prefix cache holds
        // the timed rollouts' prompts), one sampled token each: one eager forward over all their
        // tokens (chunked at the engine's max_num_batched_tokens).
        std::vector<double> prefill_seconds;
        for (int64_t rep = 0; rep < o.reps; ++rep) {
          c10::cuda::device_synchronize();
          engine.generate(make_requests(batch, o, shape->vocab_size, 1, 1000 + static_cast<uint64_t>(rep)));
          prefill_seconds.push_back(engine.last_stats().seconds);
        }
        std::sort(prefill_seconds.begin(), prefill_seconds.end());
        Cell c;
        c.prefill_tokens_per_s = static_cast<double>(reqs.size()) * static_cast<double>(o.prompt_len) /
                                 prefill_seconds[prefill_seconds.size() / 2];
        c.weights = cfg.name;
        c.mode = mode;
        c.batch = batch;
        c.graph_steps = st.graph_steps;
        c.mixed_steps = st.mixed_steps;
        c.seconds = st.seconds;  // median rollout
        c.steps = st.steps;
        c.kv_blocks = st.kv_blocks;
        c.tokens_per_s = static_cast<double>(st.generated_tokens) / c.seconds;
        c.ms_per_step = 1000.0 * c.seconds / static_cast<double>(std::max<int64_t>(st.steps, 1));
        if (st.graph_steps > 0) c.graph_gpu_ms = 1000.0 * st.graph_gpu_seconds / static_cast<double>(st.graph_steps);
        if (st.graph_steps > 0 && !mode.async)
          c.outside_graph_ms = 1000.0 * (st.seconds - st.eager_step_seconds - st.graph_capture_seconds) /
                          static_cast<double>(st.graph_steps) -
                      c.graph_gpu_ms;
        c.peak_gib = peak / (1 << 30);
        c.weight_gib = static_cast<double>(wbytes) / (1 << 30);
        // Bytes a decode step must read, at the mean context (sequences in flight: at most
        // max_num_seqs; halfway through the mean response), over the mean step time.
        const int64_t seqs = std::min<int64_t>(static_cast<int64_t>(reqs.size()) * reqs[0].params.n, o.max_num_seqs);
        const double kv_per_token =
            2.0 * shape->num_hidden_layers * shape->num_key_value_heads * shape->head_dim * (cfg.fp8_kv ? 1 : 2);
        const double mean_gen = o.gen_len_min > 0 ? (std::min(o.gen_len_min, o.gen_len) + o.gen_len) / 2.0 : o.gen_len;
        const double kv_read = static_cast<double>(seqs) * (static_cast<double>(o.prompt_len) + mean_gen / 2.0) * kv_per_token;
        c.bw_frac = (static_cast<double>(wbytes) + kv_read) / (c.ms_per_step / 1000.0) / copy_bw;
        c.capture_s = st.graph_capture_seconds;
        c.shared_keys_per_step = static_cast<double>(st.shared_prefix_key_reads_saved) /
                                 static_cast<double>(std::max<int64_t>(st.steps, 1));
        c.shared_keys_frac = c.shared_keys_per_step / (kv_read / kv_per_token);
        if (o.profile && !mode.eager && !mode.async) {
          const KernelProfile p = profile_kernels([&] { engine.generate(reqs); }, st.steps);
          const rollout::EngineStats& ps = engine.last_stats();
          std::ostringstream t;
          t << std::fixed << std::setprecision(2) << "\n#### GPU time by kernel: " << cfg.name << (mode.shared_prefix ? ", shared-prefix decode" : "")
            << ", batch " << batch
            << "\n\nOne more rollout under the profiler (" << ps.steps << " steps, " << ps.graph_steps
            << " from graphs); per step: " << p.union_ms / static_cast<double>(std::max<int64_t>(ps.steps, 1))
            << " ms with the GPU busy (" << p.busy_ms / static_cast<double>(std::max<int64_t>(ps.steps, 1))
            << " ms of summed activity: kernels launched early wait for their predecessors), "
            << 1000.0 * ps.seconds / static_cast<double>(std::max<int64_t>(ps.steps, 1))
            << " ms wall (profiled; unprofiled " << c.ms_per_step << " ms, " << c.graph_gpu_ms
            << " ms inside each graph replay).\n\n"
            << p.table;
          // The prefill alone (one-token rollouts over new prompts): one eager forward per
          // max_num_batched_tokens chunk of prompt tokens. Once per weights (not again for the
          // shared-prefix cell: its prefill is the same).
          if (!mode.shared_prefix) {
            const KernelProfile pp =
                profile_kernels([&] { engine.generate(make_requests(batch, o, shape->vocab_size, 1, 2000)); }, 1);
            t << "\n#### GPU time by kernel, prefill only: " << cfg.name << ", batch " << batch << "\n\n"
              << static_cast<int64_t>(reqs.size()) * o.prompt_len << " prompt tokens, one sampled token each: "
              << pp.union_ms << " ms with the GPU busy (" << pp.busy_ms << " ms of summed activity) in a " << pp.span_ms
              << " ms span.\n\n"
              << pp.table;
          }
          c.profile = t.str();
        }
        cells.push_back(c);
        log::info(cat("bench rollout: ", cfg.name, " ", mode.name(), " batch ", batch, ": ",
                      static_cast<int64_t>(c.tokens_per_s), " tokens/s, ", c.ms_per_step, " ms/step"));
      }
    }
  }
  m.reset();
  if (own_dir) std::filesystem::remove_all(dir);

  // What the engines ran with (their defaults, or the environment's switches).
  const bool split = env_switch("FP8RL_SPLIT_MIXED_STEPS", rollout::EngineConfig{}.split_mixed_steps);
  const bool keep = env_switch("FP8RL_KEEP_DECODE_GRAPHS", rollout::EngineConfig{}.keep_decode_graphs);
  const rollout::Fp8KvStages stages = rollout::fp8_kv_stages();
  std::ostringstream r;
  r << std::fixed;
  if (own_dir)
    r << "### rollout, Qwen3-" << o.preset << " shape, random weights\n\n";
  else
    r << "### rollout, " << o.model_dir << "\n\n";
  r << "Device: " << at::cuda::getCurrentDeviceProperties()->name
    << ". FP8 weights " << o.weight_scaling << "-scaled (quantization.weight_scaling). Prompts of " << o.prompt_len
    << " tokens, n = " << o.n << " samples per prompt (batch 1: n = 1), "
    << (o.gen_len_min > 0 ? cat(std::min(o.gen_len_min, o.gen_len), "-", o.gen_len, " (spread over the prompts)")
                          : cat(o.gen_len))
    << " generated tokens per sample, temperature 1, at most " << o.max_num_seqs
    << " sequences in flight (mixed steps: decoding sequences beside prefilling ones, eager; " << (split ? "split: one-token rows on the decode kernel" : "every context gathered") << "); "
    << (o.compare_shared_prefix ? "shared-prefix decode off, then on (\"+ shared prefix\")"
                                : "shared-prefix decode by size (the default: on where a rollout's shared prompt blocks "
                                  "in flight outgrow twice L2 a layer; see the key reads saved below)")
    << "; median of "
    << o.reps
    << " rollout(s) per cell after a warm-up ("
    << (keep ? "decode graphs kept across rollouts: the first timed rollout captures the batch sizes the warm-up did not "
               "need, later ones none"
             : "a rollout's time includes capturing its decode graphs")
    << "); kernels launched " << (pdl_enabled() ? "with" : "without") << " programmatic dependent launch (FP8RL_PDL)"
    << (pdl_enabled() && pdl_early_trigger()
            ? ", the FP8 GEMV at batch 1-4 launched before the kernel quantizing its input waits (FP8RL_PDL_EARLY_TRIGGER); "
            : "; ")
    << "with an FP8 KV cache, attention's MMAs in " << (rollout::fp8_kv_half_mma() ? "fp16" : "the model's dtype")
    << " (FP8RL_FP8_KV_HALF_MMA), its split-K count rounded " << (rollout::fp8_kv_fewer_splits() ? "down" : "up")
    << " (FP8RL_FP8_KV_FEWER_SPLITS) and "
    << (stages == rollout::Fp8KvStages::two     ? "two tile stages per block"
        : stages == rollout::Fp8KvStages::three ? "three tile stages per block"
                                                  : "three tile stages per block where a batch's single-split blocks fit one wave")
    << " (FP8RL_FP8_KV_THREE_STAGES); K/V stored by "
    << (rollout::fused_kv_store() ? "the q/k norm + RoPE kernel" : "a write kernel of their own") << " (FP8RL_FUSED_KV_STORE); "
    << "prefill tokens/s: as many one-token rollouts over new prompts. "
    << "Copy bandwidth measured in this run: " << std::setprecision(0) << copy_bw / 1e9 << " GB/s.\n\n"
    << "| weights / KV | decode | batch | generated tokens/s | ms/step | graph GPU ms/step | steps (graph, mixed) | weights GiB | peak GiB | step bytes / copy bandwidth | prefill tokens/s |\n"
    << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Cell& c : cells)
    r << "| " << c.weights << " | " << c.mode.name() << " | " << c.batch << " | " << std::setprecision(0)
      << c.tokens_per_s << " | " << std::setprecision(1) << c.ms_per_step << " | " << std::setprecision(2)
      << c.graph_gpu_ms << " | " << c.steps << " (" << c.graph_steps << ", " << c.mixed_steps
      << ") | " << std::setprecision(2) << c.weight_gib << " | " << c.peak_gib << " | " << std::setprecision(0)
      << 100.0 * c.bw_frac << "% | " << c.prefill_tokens_per_s << " |\n";
  // Cells are ordered config x mode x batch.
  const size_t nb = o.batches.size(), per_config = nb * modes.size();
  auto ratios = [&](const char* title, int num, int den, size_t mode) {
    if (num < 0 || den < 0) return;  // a configuration --configs left out
    r << "\n" << title << " tokens/s (same run, " << modes[mode].name() << "):";
    for (size_t i = 0; i < nb; ++i)
      r << " batch " << cells[i].batch << " " << std::setprecision(2)
        << cells[num * per_config + mode * nb + i].tokens_per_s / cells[den * per_config + mode * nb + i].tokens_per_s << "x;";
  };
  const int bf16 = config_index("bf16"), fp8 = config_index("fp8"), fp8_kv = config_index("fp8-kv");
  ratios("FP8 / BF16", fp8, bf16, 0);
  ratios("FP8 + FP8 KV / BF16", fp8_kv, bf16, 0);
  for (size_t m = 1; m < modes.size(); ++m)
    if (modes[m].async || modes[m].shared_prefix) {
      ratios("FP8 / BF16", fp8, bf16, m);
      ratios("FP8 + FP8 KV / BF16", fp8_kv, bf16, m);
    }
  r << "\nDecode-graph capture per rollout, seconds of its wall time (in ms/step; 0 where graphs were kept or "
       "not used):";
  for (const Cell& c : cells)
    if (!c.mode.eager)
      r << " " << c.weights << " " << c.mode.name() << " batch " << c.batch << " " << std::setprecision(3) << c.capture_s
        << " of " << c.seconds << ";";
  r << "\nOutside the graph per graph step, ms (the graph steps' wall time less the GPU time inside their replays, "
       "the rollout's eager steps and graph captures left out: host work, input copies and the sampler's kernels; "
       "synchronous cells):";
  for (const Cell& c : cells)
    if (!std::isnan(c.outside_graph_ms))
      r << " " << c.weights << " " << c.mode.name() << " batch " << c.batch << " " << std::setprecision(2)
        << c.outside_graph_ms << ";";
  if (fp8 >= 0 && bf16 >= 0) {
    r << "\nFP8 / BF16 prefill tokens/s (same run, " << o.prompt_len << "-token prompts):";
    for (size_t i = 0; i < nb; ++i)
      r << " batch " << cells[i].batch << " " << std::setprecision(2)
        << cells[fp8 * per_config + i].prefill_tokens_per_s / cells[bf16 * per_config + i].prefill_tokens_per_s << "x;";
  }
  // Mode m over the first mode (graphs, synchronous), per config and batch.
  auto mode_ratios = [&](const char* title, size_t m, bool invert) {
    r << "\n" << title << " tokens/s (same run):";
    for (size_t k = 0; k < configs.size(); ++k)
      for (size_t i = 0; i < nb; ++i) {
        const Cell& g = cells[k * per_config + i];
        const Cell& x = cells[k * per_config + m * nb + i];
        const double ratio = invert ? g.tokens_per_s / x.tokens_per_s : x.tokens_per_s / g.tokens_per_s;
        r << " " << g.weights << " batch " << g.batch << " " << std::setprecision(2) << ratio << "x;";
      }
  };
  for (size_t m = 0; m < modes.size(); ++m) {
    if (modes[m].eager) mode_ratios("CUDA graphs / eager", m, true);
    if (modes[m].async) mode_ratios("Async scheduling / synchronous (CUDA graphs)", m, false);
    if (modes[m].shared_prefix) mode_ratios("Shared-prefix decode / plain (CUDA graphs)", m, false);
    bool shared = false;  // the pass ran in a cell of this mode (always with the switch; by size else)
    for (size_t k = 0; k < configs.size(); ++k)
      for (size_t i = 0; i < nb; ++i) shared = shared || cells[k * per_config + m * nb + i].shared_keys_per_step > 0;
    if (shared) {
      r << "\nShared-prefix decode (" << modes[m].name() << "), key reads saved per step (per layer and KV head; "
        << "share of the keys a step reads at the mean context):";
      for (size_t k = 0; k < configs.size(); ++k)
        for (size_t i = 0; i < nb; ++i) {
          const Cell& x = cells[k * per_config + m * nb + i];
          r << " " << x.weights << " batch " << x.batch << " " << std::setprecision(0) << x.shared_keys_per_step
            << " (" << 100.0 * x.shared_keys_frac << "%);";
        }
    }
  }
  r << "\n\nKV capacity at gpu_memory_utilization 0.9 (tokens that fit beside the weights, 16-token blocks):";
  for (size_t k = 0; k < configs.size(); ++k) r << " " << configs[k].name << " " << kv_tokens[k] << ";";
  r << "\n";
  for (const Cell& c : cells) r << c.profile;
  return r.str();
}

#endif

}  // namespace fp8rl
