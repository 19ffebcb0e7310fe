#include "loss/policy_loss.h"

#include <vector>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::loss {

at::Tensor masked_mean(const at::Tensor& x, const at::Tensor& mask) {
  FP8RL_CHECK(x.sizes() == mask.sizes(), cat("masked_mean: x ", x.sizes(), " vs mask ", mask.sizes()));
  const at::Tensor m = mask.to(x.scalar_type());
  return (x * m).sum() / m.sum().clamp_min(1);
}

PolicyLoss ppo_clip_loss(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                         const at::Tensor& response_mask, const PolicyLossOptions& options) {
  const double low = options.clip_ratio_low, high = options.clip_ratio_high;
  if (!(low >= 0 && low < 1)) {
    throw ConfigError(cat("algorithm.clip_ratio_low must be in [0, 1), got ", low));
  }
  if (!(high >= 0)) throw ConfigError(cat("algorithm.clip_ratio_high must be >= 0, got ", high));
  if (options.clip_ratio_c && !(*options.clip_ratio_c > 1)) {
    throw ConfigError(cat("algorithm.clip_ratio_c must be > 1 (or null = off), got ", *options.clip_ratio_c));
  }
  FP8RL_CHECK(logp.dim() == 2 && old_logp.sizes() == logp.sizes() && response_mask.sizes() == logp.sizes(),
              cat("ppo_clip_loss: logp ", logp.sizes(), ", old_logp ", old_logp.sizes(), ", response_mask ",
                  response_mask.sizes(), " must all be [B, T]"));
  const at::Tensor adv = advantages.dim() == 1 ? advantages.unsqueeze(1) : advantages;  // [B, 1] or [B, T]
  FP8RL_CHECK(adv.dim() == 2 && adv.size(0) == logp.size(0) && (adv.size(1) == 1 || adv.size(1) == logp.size(1)),
              cat("ppo_clip_loss: advantages ", advantages.sizes(), " must be [B] or [B, T] for logp ", logp.sizes()));
  const at::Tensor a = adv.detach().to(logp.scalar_type()).expand_as(logp);  // [B, T]

  const double clamp = options.log_ratio_clamp;
  const at::Tensor log_ratio = (logp - old_logp.detach()).clamp(-clamp, clamp);  // [B, T]
  const at::Tensor ratio = log_ratio.exp();
  const at::Tensor loss1 = -a * ratio;
  const at::Tensor loss2 = -a * ratio.clamp(1 - low, 1 + high);
  const at::Tensor clipped = at::maximum(loss1, loss2);
  at::Tensor loss = clipped;
  at::Tensor dual_active = at::zeros_like(a, a.options().dtype(at::kBool));
  if (options.clip_ratio_c) {
    // Dual clip: with A < 0 a huge ratio makes -A*ratio unbounded; cap it at -A*c (verl).
    const at::Tensor loss3 = -a * *options.clip_ratio_c;
    dual_active = (clipped > loss3) & (a < 0);
    loss = at::where(a < 0, at::minimum(clipped, loss3), clipped);
  }

  PolicyLoss out;
  out.per_token_loss = loss;
  out.ratio = ratio.detach();
  // Clip metrics from the branch that won: loss2 > loss1 means the clamp removed the gradient.
  const at::Tensor clip_active = (loss2 > loss1).detach();
  const at::Tensor mask = response_mask.detach();
  const at::Tensor stats = at::stack({
      masked_mean((clip_active & (a < 0)).to(logp.scalar_type()), mask),
      masked_mean((clip_active & (a > 0)).to(logp.scalar_type()), mask),
      masked_mean(dual_active.to(logp.scalar_type()), mask),
      masked_mean(-log_ratio.detach(), mask),
  }).to(at::kCPU, at::kDouble);  // one device->host copy for all metrics
  const double* s = stats.data_ptr<double>();
  out.metrics = {s[0], s[1], s[2], s[3]};
  return out;
}

}  // namespace fp8rl::loss
