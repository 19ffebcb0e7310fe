#include "loss/logprobs.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::loss {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_inputs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, double temperature) {
  FP8RL_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              cat("logprobs: hidden ", hidden.sizes(), " must be [T, H] and weight ", weight.sizes(), " [V, H]"));
  FP8RL_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0),
              cat("logprobs: targets ", targets.sizes(), " must be [T] for hidden ", hidden.sizes()));
  FP8RL_CHECK(targets.scalar_type() == at::kLong, cat("logprobs: targets must be int64, got ", targets.scalar_type()));
  FP8RL_CHECK(hidden.scalar_type() == weight.scalar_type(),
              cat("logprobs: hidden ", hidden.scalar_type(), " and weight ", weight.scalar_type(), " must match"));
  FP8RL_CHECK(temperature > 0, cat("logprobs: temperature must be > 0, got ", temperature));
}

at::ScalarType compute_dtype(const at::Tensor& t) { return at::promote_types(t.scalar_type(), at::kFloat); }

// [c, H] x [V, H] -> [c, V] logits / temperature in the compute dtype.
at::Tensor chunk_logits(const at::Tensor& h, const at::Tensor& weight, double temperature, at::ScalarType dtype) {
  at::Tensor z = at::matmul(h, weight.t()).to(dtype);
  if (temperature != 1.0) z.div_(temperature);
  return z;
}

// Derivatives per chunk, with p = softmax(z), lse = logsumexp(z), Hn = entropy = lse - sum p z:
//   d logp_t / dz = onehot(target) - p
//   d Hn / dz     = -p * (z - lse + Hn)      (= -p * (log p + Hn))
// so grad_z = g_lp * onehot - p * (g_lp + g_ent * (log p + Hn)).
class ChunkedLogprobsEntropy : public torch::autograd::Function<ChunkedLogprobsEntropy> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& targets, int64_t chunk_size, double temperature) {
    const int64_t T = hidden.size(0);
    const at::ScalarType dtype = compute_dtype(hidden);
    const auto opts = hidden.options().dtype(dtype);
    at::Tensor logp = at::empty({T}, opts), entropy = at::empty({T}, opts), lse = at::empty({T}, opts);
    for (int64_t s = 0; s < T; s += chunk_size) {
      const int64_t e = std::min(T, s + chunk_size);
      at::Tensor z = chunk_logits(hidden.slice(0, s, e), weight, temperature, dtype);  // [c, V]
      const at::Tensor l = at::logsumexp(z, {1});                                     // [c]
      lse.slice(0, s, e).copy_(l);
      logp.slice(0, s, e).copy_(z.gather(1, targets.slice(0, s, e).unsqueeze(1)).squeeze(1) - l);
      at::Tensor p = (z - l.unsqueeze(1)).exp_();  // [c, V]
      entropy.slice(0, s, e).copy_(l - p.mul_(z).sum(1));
    }
    ctx->save_for_backward({hidden, weight, targets, lse, entropy});
    ctx->saved_data["chunk_size"] = chunk_size;
    ctx->saved_data["temperature"] = temperature;
    return {logp, entropy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &weight = saved[1], &targets = saved[2], &lse = saved[3], &entropy = saved[4];
    const int64_t chunk_size = ctx->saved_data["chunk_size"].toInt();
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const at::ScalarType dtype = compute_dtype(hidden);
    const int64_t T = hidden.size(0);
    // Undefined = that output was not used; treat as zero.
    const at::Tensor g_lp = grad_outputs[0].defined() ? grad_outputs[0].to(dtype) : at::zeros({T}, lse.options());
    const at::Tensor g_ent = grad_outputs[1].defined() ? grad_outputs[1].to(dtype) : at::zeros({T}, lse.options());
    const bool need_h = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);

    at::Tensor grad_h = need_h ? at::empty_like(hidden) : at::Tensor();
    at::Tensor grad_w = need_w ? at::zeros(weight.sizes(), weight.options().dtype(dtype)) : at::Tensor();
    if (!need_h && !need_w) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    for (int64_t s = 0; s < T; s += chunk_size) {
      const int64_t e = std::min(T, s + chunk_size);
      const at::Tensor h = hidden.slice(0, s, e);             // [c, H]
      const at::Tensor glp = g_lp.slice(0, s, e).unsqueeze(1);  // [c, 1]
      at::Tensor z = chunk_logits(h, weight, temperature, dtype);  // [c, V], becomes log p
      z.sub_(lse.slice(0, s, e).unsqueeze(1));
      at::Tensor grad_z = z.exp();  // p, becomes grad wrt z
      // z <- g_lp + g_ent * (log p + Hn)
      z.add_(entropy.slice(0, s, e).unsqueeze(1)).mul_(g_ent.slice(0, s, e).unsqueeze(1)).add_(glp);
      grad_z.mul_(z).neg_();
      z = at::Tensor();  // free before the GEMMs
      grad_z.scatter_add_(1, targets.slice(0, s, e).unsqueeze(1), glp);
      if (temperature != 1.0) grad_z.div_(temperature);
      const at::Tensor gz = grad_z.to(weight.scalar_type());  // [c, V]
      grad_z = at::Tensor();
      if (need_h) grad_h.slice(0, s, e).copy_(at::matmul(gz, weight));  // [c, V] @ [V, H]
      if (need_w) {
        if (gz.scalar_type() == dtype) {
          grad_w.addmm_(gz.t(), h);  // [V, c] @ [c, H], in place
        } else {
          grad_w.add_(at::matmul(gz.t(), h));  // low-precision GEMM, fp32 accumulation across chunks
        }
      }
    }
    if (need_w) grad_w = grad_w.to(weight.scalar_type());
    return {grad_h, grad_w, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

TokenLogprobs chunked_logprobs_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                       int64_t chunk_size, double temperature) {
  check_inputs(hidden, weight, targets, temperature);
  FP8RL_CHECK(chunk_size > 0, cat("logprobs: chunk_size must be > 0, got ", chunk_size));
  if (hidden.size(0) == 0) {
    const at::Tensor empty = at::zeros({0}, hidden.options().dtype(compute_dtype(hidden)));
    return {empty, empty.clone()};
  }
  const variable_list out = ChunkedLogprobsEntropy::apply(hidden, weight, targets, chunk_size, temperature);
  return {out[0], out[1]};
}

TokenLogprobs full_logprobs_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                    double temperature) {
  check_inputs(hidden, weight, targets, temperature);
  const at::Tensor z = at::matmul(hidden, weight.t()).to(compute_dtype(hidden)) / temperature;  // [T, V]
  const at::Tensor logp_all = at::log_softmax(z, 1);
  return {logp_all.gather(1, targets.unsqueeze(1)).squeeze(1), -(logp_all.exp() * logp_all).sum(1)};
}

}  // namespace fp8rl::loss
