#include "loss/kl.h"

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::loss {

KlType parse_kl_type(std::string_view name) {
  if (name == "k1" || name == "kl") return KlType::k1;
  if (name == "k2" || name == "mse") return KlType::k2;
  if (name == "k3" || name == "low_var_kl") return KlType::k3;
  throw ConfigError(cat("algorithm.kl_loss_type: unknown value '", name,
                        "' (valid: k1 (kl), k2 (mse), k3 (low_var_kl))"));
}

const char* to_string(KlType type) {
  switch (type) {
    case KlType::k1: return "k1";
    case KlType::k2: return "k2";
    case KlType::k3: return "k3";
  }
  return "?";
}

at::Tensor kl_penalty(const at::Tensor& logp, const at::Tensor& ref_logp, KlType type) {
  FP8RL_CHECK(logp.sizes() == ref_logp.sizes(),
              cat("kl_penalty: logp ", logp.sizes(), " vs ref_logp ", ref_logp.sizes()));
  const at::Tensor ref = ref_logp.detach().to(logp.scalar_type());
  switch (type) {
    case KlType::k1:
      return logp - ref;
    case KlType::k2: {
      const at::Tensor d = logp - ref;
      return 0.5 * d * d;
    }
    case KlType::k3: {
      const at::Tensor kl = (ref - logp).clamp(-20, 20);
      return (kl.exp() - kl - 1).clamp(-10, 10);
    }
  }
  FP8RL_CHECK(false, "kl_penalty: unhandled KlType");
  return {};
}

}  // namespace fp8rl::loss
