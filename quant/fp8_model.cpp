#include "quant/fp8_model.h"

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/log.h"
#include "quant/hf_fp8.h"

namespace fp8rl {

model::NamedTensors Fp8ModelLinear::parameters() const {
  if (!layer_.bias().defined()) return {};
  return {{"bias", layer_.bias()}};
}

model::LinearFactory fp8_linear_factory(const PrecisionPlan& plan, const QuantizationConfig& q,
                                        const safetensors::Checkpoint* prequantized, at::Device device,
                                        at::ScalarType dtype) {
  auto shared_plan = std::make_shared<const PrecisionPlan>(plan);
  const WeightScaling ws = parse_weight_scaling(q.weight_scaling);
  const ActScaling as = parse_act_scaling(q.activation_scaling);
  const Fp8Format fmt = parse_fp8_format(q.fmt);
  const bool w_pow2 = q.use_weight_pow2_scale, a_pow2 = q.use_activation_pow2_scale;
  return [shared_plan, ws, as, fmt, w_pow2, a_pow2, prequantized, device, dtype](
             const std::string& name, at::Tensor weight, at::Tensor bias) -> std::unique_ptr<model::Linear> {
    const ModulePlan* m = shared_plan->find(name);
    FP8RL_CHECK(m != nullptr, cat("fp8_linear_factory: module ", name, " is not in the precision plan"));
    if (!weight.defined()) {  // stored as FP8 in the checkpoint
      FP8RL_CHECK(prequantized != nullptr, cat("fp8_linear_factory: ", name, " came without a weight"));
      Fp8Weight w = load_hf_fp8_weight(*prequantized, name, device);
      if (m->precision == Precision::bf16)  // exact: q * s is representable in float, then rounded once
        return std::make_unique<model::DenseLinear>(dequantize(w).to(dtype), std::move(bias));
      if (ws != WeightScaling::block)
        throw ConfigError(cat(prequantized->file_of(name + ".weight"), ": '", name,
                              "' is stored with 128x128 block scales; set quantization.weight_scaling: block"));
      return std::make_unique<Fp8ModelLinear>(Fp8Linear(std::move(w), std::move(bias), as, a_pow2));
    }
    if (m->precision == Precision::bf16) return std::make_unique<model::DenseLinear>(std::move(weight), std::move(bias));
    Fp8Weight w = quantize_weight(weight, ws, fmt, w_pow2, name + ".weight");
    weight = at::Tensor();  // the BF16 copy is released here, before the next projection loads
    return std::make_unique<Fp8ModelLinear>(Fp8Linear(std::move(w), std::move(bias), as, a_pow2));
  };
}

model::CausalLM load_causal_lm(const std::string& model_dir, const QuantizationConfig& q,
                               const model::LoadOptions& base, PrecisionPlan* plan_out) {
  const model::ModelConfig config = model::read_model_config(model_dir);
  const safetensors::Checkpoint ckpt(model_dir);
  model::LoadOptions o = base;
  o.linear = model::dense_linear_factory();
  o.linear_loads_fp8 = false;
  const std::string dtype = base.dtype == at::kFloat ? "float32" : "bfloat16";
  const PrecisionPlan plan = make_precision_plan(config.shape, q, dtype);
  if (q.quant_method == "fp8") {
    read_hf_fp8_config(model_dir);  // a pre-quantized checkpoint must be one we can run as stored
    o.linear = fp8_linear_factory(plan, q, &ckpt, base.device, base.dtype);
    o.linear_loads_fp8 = true;
  }
  if (plan_out) *plan_out = plan;
  return model::CausalLM::load(config, ckpt, o);
}

int64_t check_model_dir(const std::string& model_dir, const QuantizationConfig& q) {
  const model::ModelConfig config = model::read_model_config(model_dir);
  const safetensors::Checkpoint ckpt(model_dir);
  int64_t fp8 = 0;
  for (const model::TensorSpec& spec : model::checkpoint_tensors(config)) {
    const auto& v = ckpt.expect_shape(spec.name, spec.shape);
    if (v.dtype != safetensors::Dtype::F8_E4M3) continue;
    ++fp8;
    if (q.quant_method != "fp8")
      throw ConfigError(cat(ckpt.file_of(spec.name), ": tensor '", spec.name,
                            "' is FP8 (a pre-quantized checkpoint); it needs quantization.quant_method: fp8"));
    const std::string scale = spec.name.substr(0, spec.name.size() - 7) + ".weight_scale_inv";  // ".weight"
    if (!ckpt.contains(scale))
      throw ConfigError(cat(ckpt.file_of(spec.name), ": FP8 tensor '", spec.name, "' has no '", scale, "' beside it"));
  }
  if (fp8 > 0) read_hf_fp8_config(model_dir);
  return fp8;
}

}  // namespace fp8rl
