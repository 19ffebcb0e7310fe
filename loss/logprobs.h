// Token log-probs and entropy from the last hidden states, without materialising the
// [tokens x vocab] fp32 logits of the whole batch.
//
// With T = 8192 response tokens and a 151936-token vocabulary, full fp32 logits are 5 GB (and
// autograd keeps them, plus log_softmax's output, for backward). Here the tokens are processed
// in chunks: forward keeps only logsumexp and entropy per token ([T] each), and backward
// RECOMPUTES each chunk's logits, so the extra memory is O(chunk_size x V), not O(T x V).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fp8rl::loss {

struct TokenLogprobs {
  at::Tensor logprobs;  // [T] log softmax(logits / temperature)[target]
  at::Tensor entropy;   // [T] entropy of softmax(logits / temperature)
};

// Chunked, memory-bounded, differentiable w.r.t. hidden, weight (both outputs).
//   hidden      [T, H] bf16/fp16/fp32/fp64  final-norm output of the response positions
//   weight      [V, H] same dtype           lm_head weight (logits = hidden @ weight^T)
//   targets     [T] int64 in [0, V)          the token whose log-prob is wanted
//   chunk_size  tokens per chunk (> 0); peak extra memory ~ 3-4 x chunk_size x V x 4 bytes
//   temperature > 0; logits are divided by it (the rollout's sampling temperature)
// Outputs are in promote(dtype, float32): fp32 for bf16 inputs, fp64 for fp64 inputs (tests).
// Precision: the logits GEMM runs in the input dtype (fp32 accumulation on GPU), then softmax
// math is fp32; backward's GEMMs run in the input dtype too; grad_weight is accumulated across
// chunks in fp32 ([V, H] x 4 bytes, only when weight requires grad — a frozen LoRA lm_head
// costs nothing).
TokenLogprobs chunked_logprobs_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                       int64_t chunk_size, double temperature = 1.0);

// Reference with plain autograd ops: materialises the [T, V] logits. For tests and small cases.
TokenLogprobs full_logprobs_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                    double temperature = 1.0);

}  // namespace fp8rl::loss
