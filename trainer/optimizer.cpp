#include "trainer/optimizer.h"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <numbers>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::trainer {

double scheduled_lr(double base, int64_t step, int64_t warmup, int64_t total, const std::string& scheduler) {
  if (warmup > 0 && step < warmup) return base * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (scheduler != "cosine") return base;
  const int64_t span = std::max<int64_t>(1, total - warmup);
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(span));
  return base * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

AdamWOptions adamw_options(const recipe::TrainerConfig& t, double lr) {
  AdamWOptions o;
  o.lr = lr;
  o.beta1 = t.adam_beta1;
  o.beta2 = t.adam_beta2;
  o.eps = t.adam_eps;
  o.weight_decay = t.weight_decay;
  return o;
}

AdamW::AdamW(std::vector<model::ModelTensor> params, AdamWOptions options) : options_(options) {
  at::NoGradGuard no_grad;
  for (model::ModelTensor& p : params) {
    FP8RL_CHECK(p.tensor.requires_grad() && p.tensor.is_leaf(), cat("AdamW: ", p.name, " is not a trainable leaf"));
    Slot s;
    s.name = p.name;
    s.param = p.tensor;
    if (p.tensor.scalar_type() != at::kFloat) s.master = p.tensor.detach().to(at::kFloat).clone();
    s.exp_avg = at::zeros(p.tensor.sizes(), p.tensor.options().dtype(at::kFloat).requires_grad(false));
    s.exp_avg_sq = at::zeros_like(s.exp_avg);
    slots_.push_back(std::move(s));
  }
}

double AdamW::clip_grad_norm(double max_norm) {
  // Per-tensor norms in FP64 on the device, then one host sync for all of them.
  std::vector<at::Tensor> norms;
  for (const Slot& s : slots_)
    if (s.param.grad().defined())
      norms.push_back(at::linalg_vector_norm(s.param.grad(), 2, std::nullopt, false, at::kDouble));
  if (norms.empty()) return 0.0;
  const double norm = at::stack(norms).square().sum().sqrt().item<double>();
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) {
    const double coef = max_norm / (norm + 1e-6);
    at::NoGradGuard no_grad;
    for (Slot& s : slots_)
      if (s.param.grad().defined()) s.param.mutable_grad().mul_(coef);
  }
  return norm;
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step_));
  for (Slot& s : slots_) {
    if (!s.param.grad().defined()) continue;
    const at::Tensor g = s.param.grad().to(at::kFloat);
    at::Tensor p = s.master.defined() ? s.master : s.param.detach();
    s.exp_avg.mul_(b1).add_(g, 1.0 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(g, g, 1.0 - b2);
    if (options_.weight_decay != 0) p.mul_(1.0 - lr * options_.weight_decay);
    const at::Tensor denom = (s.exp_avg_sq / bc2).sqrt_().add_(options_.eps);
    p.addcdiv_(s.exp_avg, denom, -lr / bc1);
    if (s.master.defined()) s.param.detach().copy_(s.master);
  }
  zero_grad();
}

std::vector<at::Tensor> AdamW::parameters() const {
  std::vector<at::Tensor> out;
  out.reserve(slots_.size());
  for (const Slot& s : slots_) out.push_back(s.param);
  return out;
}

void AdamW::zero_grad() {
  for (Slot& s : slots_) s.param.mutable_grad() = at::Tensor();
}

std::map<std::string, at::Tensor> AdamW::state_tensors() const {
  std::map<std::string, at::Tensor> out;
  for (const Slot& s : slots_) {
    out[s.name + ".exp_avg"] = s.exp_avg;
    out[s.name + ".exp_avg_sq"] = s.exp_avg_sq;
    if (s.master.defined()) out[s.name + ".master"] = s.master;
  }
  out["step"] = at::tensor(std::vector<int64_t>{step_});
  return out;
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& state, const std::string& source) {
  at::NoGradGuard no_grad;
  auto get = [&](const std::string& name, const at::Tensor& like) {
    const auto it = state.find(name);
    if (it == state.end()) throw ConfigError(cat(source, ": optimizer state '", name, "' is missing; expected one per trainable tensor"));
    if (it->second.sizes() != like.sizes())
      throw ConfigError(cat(source, ": optimizer state '", name, "' has shape ", it->second.sizes(), ", the model needs ",
                            like.sizes()));
    return it->second;
  };
  for (Slot& s : slots_) {
    s.exp_avg.copy_(get(s.name + ".exp_avg", s.exp_avg));
    s.exp_avg_sq.copy_(get(s.name + ".exp_avg_sq", s.exp_avg_sq));
    if (s.master.defined()) {
      s.master.copy_(get(s.name + ".master", s.master));
      s.param.detach().copy_(s.master);
    }
  }
  const auto it = state.find("step");
  if (it == state.end() || it->second.numel() != 1) throw ConfigError(source + ": optimizer state 'step' is missing");
  step_ = it->second.to(at::kLong).item<int64_t>();
}

}  // namespace fp8rl::trainer
