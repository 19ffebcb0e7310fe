// KL penalty estimators between the current policy and a reference policy, per token
// (Schulman's k1/k2/k3; verl's kl / mse / low_var_kl).
#pragma once

#include <ATen/ATen.h>

#include <string_view>

namespace fp8rl::loss {

enum class KlType {
  k1,  // logp - ref_logp                       unbiased, high variance, can be negative
  k2,  // 0.5 * (logp - ref_logp)^2             "mse"; biased, low variance
  k3,  // exp(ref - logp) - (ref - logp) - 1    "low_var_kl"; unbiased, >= 0, clamped to [-10, 10]
};

// "k1" | "k2" | "k3" (algorithm.kl_loss_type), also verl's aliases "kl", "mse", "low_var_kl";
// ConfigError listing the valid values otherwise. For the trainer, once, when it reads the
// recipe: kl_penalty() takes the enum.
KlType parse_kl_type(std::string_view name);
const char* to_string(KlType type);  // "k1" | "k2" | "k3"

// Per-token KL estimate, differentiable w.r.t. logp.
//   logp     [B, T] float  current policy log-probs (requires grad)
//   ref_logp [B, T] float  reference policy log-probs (treated as constant)
// Returns [B, T]; padding positions are not masked here (aggregate() applies the mask).
// k3 clamps ref - logp to [-20, 20] before exp() and the result to [-10, 10], as verl does, so
// a token the reference finds impossible cannot produce inf.
at::Tensor kl_penalty(const at::Tensor& logp, const at::Tensor& ref_logp, KlType type);

}  // namespace fp8rl::loss
