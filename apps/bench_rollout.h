// `fp8rl bench rollout`: the engine's generation speed on random weights at a Qwen3 preset shape:
// BF16 weights, FP8 weights (128x128 blocks), and FP8 weights with an FP8 KV cache, in one run,
// on RL-shaped work: `prompts` prompts of `prompt_len` tokens, `n` samples each sharing the prompt's KV, `gen_len` generated tokens
// per sample (no early stop: EOS is not a stop token here). Per cell (weights x batch = prompts *
// n sequences): generated tokens/s over the whole rollout, ms per step, steps, peak memory, and
// the bytes each decode step must read (weights + KV) against the step time, as a fraction of the
// device-to-device copy bandwidth measured in the same run; and the KV tokens that fit at
// gpu_memory_utilization 0.9 beside each configuration's weights.
//
// Decode steps run as the engine runs them (CUDA graphs of the paged decode kernel); with
// compare_eager every cell is also run with rollout.enforce_eager (the same kernels launched one by
// one), in the same run, so the graphs' share of the speed is a same-run ratio; compare_async
// likewise runs every cell also with rollout.async_scheduling (step t+1 scheduled and launched
// before step t's tokens are read), and compare_shared_prefix with rollout.shared_prefix_decode
// (a prompt's n samples read its KV blocks together in decode steps; the "step bytes" column
// still counts every sequence's whole context, so there it is an effective bandwidth). "graph GPU ms" is
// the GPU time inside the decode graphs' replays (CUDA events): ms/step minus it is what a decode
// step spends on the host and in prefill. "prefill tokens/s": as many one-token rollouts over new
// prompts as timed rollouts, their prompt tokens over the median time (--prompt-len 8192 --batch 1:
// one 8K-token forward). With profile, each graphs cell runs one more rollout and one more prefill
// under the kernel profiler (apps/kernel_profile.h) and the report tabulates their GPU time by kernel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fp8rl {

struct RolloutBenchOptions {
  std::string preset = "0.6b";
  std::string model_dir;  // set: benchmark this HF checkpoint instead of a random preset-shape one
  std::vector<int64_t> batches{1, 64};  // sequences in flight (prompts * n)
  int64_t n = 8;                        // samples per prompt (batch 1 uses n = 1)
  int64_t prompt_len = 512;
  int64_t gen_len = 256;
  // > 0: samples of prompt p generate a length spread evenly over [gen_len_min, gen_len] by p
  // (RL responses differ in length); with more sequences than max_num_seqs, those that finish
  // early free slots for waiting ones mid-rollout, as in a real rollout (mixed steps).
  int64_t gen_len_min = 0;
  int64_t max_num_seqs = 512;  // rollout.max_num_seqs of the engine
  uint64_t seed = 0;
  bool compare_eager = false;  // also run every cell without CUDA graphs
  bool compare_async = false;  // also run every cell with rollout.async_scheduling (one step in flight)
  bool compare_shared_prefix = false;  // also run every cell with rollout.shared_prefix_decode
  int64_t reps = 1;            // timed rollouts per cell (median reported)
  bool profile = false;        // per cell (graphs), one more rollout under the kernel profiler
  std::vector<std::string> configs;  // of bf16, fp8, fp8-kv (weights / KV): those to run; empty: all
  // FP8 weights' scaling (quantization.weight_scaling): block (128x128, with 1x128 activation
  // groups), channel (with per-token activations) or tensor (with a per-tensor activation scale).
  std::string weight_scaling = "block";
};

std::string run_rollout_bench(const RolloutBenchOptions& options);

}  // namespace fp8rl
