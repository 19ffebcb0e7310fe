#include "quant/fp8_model.h"

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/log.h"

namespace fp8rl {

model::NamedTensors Fp8ModelLinear::parameters() const {
  if (!layer_.bias().defined()) return {};
  return {{"bias", layer_.bias()}};
}

model::LinearFactory fp8_linear_factory(const PrecisionPlan& plan, const QuantizationConfig& q) {
  auto shared_plan = std::make_shared<const PrecisionPlan>(plan);
  const WeightScaling ws = parse_weight_scaling(q.weight_scaling);
  const ActScaling as = parse_act_scaling(q.activation_scaling);
  const Fp8Format fmt = parse_fp8_format(q.fmt);
  const bool w_pow2 = q.use_weight_pow2_scale, a_pow2 = q.use_activation_pow2_scale;
  return [shared_plan, ws, as, fmt, w_pow2, a_pow2](const std::string& name, at::Tensor weight,
                                                    at::Tensor bias) -> std::unique_ptr<model::Linear> {
    const ModulePlan* m = shared_plan->find(name);
    FP8RL_CHECK(m != nullptr, cat("fp8_linear_factory: module ", name, " is not in the precision plan"));
    if (m->precision == Precision::bf16) return std::make_unique<model::DenseLinear>(std::move(weight), std::move(bias));
    Fp8Weight w = quantize_weight(weight, ws, fmt, w_pow2, name + ".weight");
    weight = at::Tensor();  // the BF16 copy is released here, before the next projection loads
    return std::make_unique<Fp8ModelLinear>(Fp8Linear(std::move(w), std::move(bias), as, a_pow2));
  };
}

}  // namespace fp8rl
