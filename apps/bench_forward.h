// `fp8rl bench forward`: the trainer's forward + backward at a training-like shape, as the model
// ran before the packed forward and after it, in one run:
//
//   padded, split (before): the batch padded to [B, T]; every layer runs over B*T tokens, pads
//     included; q/k/v and gate/up as separate projections; attention is one SDPA call with a
//     dense [B, 1, T, T] boolean mask (which also keeps SDPA off the flash kernel).
//   packed, split: only the real tokens, concatenated; attention is ATen's flash-attention varlen
//     kernel on the sequence boundaries (VarlenAttention); projections still separate.
//   packed, fused (after): as above with q/k/v as one qkv_proj and gate/up as one gate_up_proj.
//
// All rows: random weights at a Qwen3 preset shape, BF16, every parameter trainable (full
// fine-tuning), loss = sum of the chunked token log-probs of the real tokens (loss/logprobs.h), so
// lm_head and its backward are in the step as in training. Per row: median step time over `reps`
// steps after one warm-up, real tokens/s, and peak allocated memory during the step above what
// was allocated before it (activations + gradients + workspace).
#pragma once

#include <cstdint>
#include <string>

namespace fp8rl {

struct ForwardBenchOptions {
  std::string preset = "0.6b";  // Qwen3 preset (core/recipe/model_presets.h)
  int64_t batch = 16;           // sequences per step
  int64_t seq = 2048;           // longest sequence (the padded length)
  int64_t min_len = 1024;       // lengths are drawn uniformly in [min_len, seq]
  int reps = 5;
  uint64_t seed = 0;
};

// Runs on the current CUDA device and returns a Markdown report. Throws RuntimeFailure without CUDA.
std::string run_forward_bench(const ForwardBenchOptions& options);

}  // namespace fp8rl
