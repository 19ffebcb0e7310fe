#include "quant/fp8_model.h"

#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "core/util/env.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/model/architecture.h"
#include "quant/hf_fp8.h"

namespace fp8rl::quant {

void Fp8ModelLinear::visit(const std::string& module, const model::TensorVisitor& fn) const {
  fn({module + ".weight", layer_.weight().data, model::TensorRole::fp8_data});
  fn({module + ".weight_scale_inv", layer_.weight().scale, model::TensorRole::fp8_scale});
  if (layer_.bias().defined()) fn({module + ".bias", layer_.bias(), model::dense_role(layer_.bias())});
}

namespace {

// FP8RL_FUSED_ACT_QUANT=0 turns the fused input quantization off (read once): a benchmark runs
// the engine with and without it from one binary, in one call, on the same card.
bool fused_act_quant_enabled() {
  static const bool on = env_switch("FP8RL_FUSED_ACT_QUANT", true);
  return on;
}

}  // namespace

at::Tensor Fp8ModelLinear::forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps) {
  if (fused_act_quant_enabled() && layer_.takes_fused_input(x)) {
    const Fp8Weight& w = layer_.weight();
    if (std::optional<Fp8Activation> qx = rms_norm_quantize_activation(
            x, norm_weight, eps, layer_.act_scaling(), w.fmt, layer_.act_pow2(), layer_.nonfinite_input_flag()))
      return layer_.forward_quantized(*qx);
  }
  return Linear::forward_rms_normed(x, norm_weight, eps);
}

at::Tensor Fp8ModelLinear::forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual,
                                                  const at::Tensor& norm_weight, double eps, at::Tensor& sum) {
  if (fused_act_quant_enabled() && layer_.takes_fused_input(x)) {
    const Fp8Weight& w = layer_.weight();
    if (std::optional<Fp8Activation> qx = add_rms_norm_quantize_activation(
            x, residual, norm_weight, eps, layer_.act_scaling(), w.fmt, layer_.act_pow2(), sum,
            layer_.nonfinite_input_flag()))
      return layer_.forward_quantized(*qx);
  }
  return Linear::forward_add_rms_normed(x, residual, norm_weight, eps, sum);
}

at::Tensor Fp8ModelLinear::forward_silu_mul(const at::Tensor& gate_up) {
  if (fused_act_quant_enabled() && layer_.takes_fused_input(gate_up)) {
    const Fp8Weight& w = layer_.weight();
    if (std::optional<Fp8Activation> qx = silu_mul_quantize_activation(
            gate_up, layer_.act_scaling(), w.fmt, layer_.act_pow2(), layer_.nonfinite_input_flag()))
      return layer_.forward_quantized(*qx);
  }
  return Linear::forward_silu_mul(gate_up);
}

namespace {

bool stored_fp8(const safetensors::Checkpoint& ckpt, const std::string& module) {
  return ckpt.get(module + ".weight").dtype == safetensors::Dtype::F8_E4M3;
}

// The plan entries of a projection's parts; they share one precision (the fuse policy saw to it).
Precision planned_precision(const PrecisionPlan& plan, const model::ProjectionSpec& spec) {
  std::optional<Precision> p;
  for (const std::string& part : spec.parts) {
    const ModulePlan* m = plan.find(part);
    FP8RL_CHECK(m != nullptr, cat("fp8_linear_factory: module ", part, " is not in the precision plan"));
    FP8RL_CHECK(!p || *p == m->precision, cat("fp8_linear_factory: the parts of ", spec.name, " differ in precision"));
    p = m->precision;
  }
  return *p;
}

// The parts' stored FP8 weights (128-aligned rows, so no padding between them) as one weight.
Fp8Weight load_stored_fp8(const model::ProjectionSpec& spec, const model::WeightReader& reader) {
  std::vector<Fp8Weight> parts;
  for (const std::string& part : spec.parts) parts.push_back(load_hf_fp8_weight(reader.checkpoint(), part, reader.device()));
  if (parts.size() == 1) return std::move(parts.front());
  Fp8Weight w = parts.front();
  std::vector<at::Tensor> data, scale;
  for (const Fp8Weight& p : parts) {
    FP8RL_CHECK(p.out_features % kFp8Block == 0, cat("fp8_linear_factory: ", spec.name, " fused across unaligned parts"));
    data.push_back(p.data);
    scale.push_back(p.scale);
  }
  w.data = at::cat(data, 0);
  w.scale = at::cat(scale, 0);
  w.out_features = spec.out_features();
  return w;
}

}  // namespace

model::LinearFactory fp8_linear_factory(const PrecisionPlan& plan, const recipe::QuantizationConfig& q) {
  auto shared_plan = std::make_shared<const PrecisionPlan>(plan);
  const WeightScaling ws = parse_weight_scaling(q.weight_scaling);
  const ActScaling as = parse_act_scaling(q.activation_scaling);
  const Fp8Format fmt = parse_fp8_format(q.fmt);
  const bool w_pow2 = q.use_weight_pow2_scale, a_pow2 = q.use_activation_pow2_scale;
  return [shared_plan, ws, as, fmt, w_pow2, a_pow2](const model::ProjectionSpec& spec,
                                                   const model::WeightReader& reader) -> std::unique_ptr<model::Linear> {
    const Precision precision = planned_precision(*shared_plan, spec);
    const safetensors::Checkpoint& ckpt = reader.checkpoint();
    if (stored_fp8(ckpt, spec.parts.front())) {  // an HF FP8 checkpoint: used as stored
      Fp8Weight w = load_stored_fp8(spec, reader);
      at::Tensor bias;
      if (spec.bias) {
        std::vector<at::Tensor> b;
        for (size_t i = 0; i < spec.parts.size(); ++i)
          b.push_back(reader.dense(spec.parts[i] + ".bias", std::vector<int64_t>{spec.part_out[i]}));
        bias = b.size() == 1 ? b[0] : at::cat(b, 0);
        if (reader.requires_grad()) bias.set_requires_grad(true);
      }
      if (precision == Precision::bf16) {  // exact: q * s is representable in float, then rounded once
        at::Tensor dense = dequantize(w).to(reader.dtype());
        if (reader.requires_grad()) dense.set_requires_grad(true);
        return std::make_unique<model::DenseLinear>(std::move(dense), std::move(bias));
      }
      if (ws != WeightScaling::block)
        throw ConfigError(cat(ckpt.file_of(spec.parts.front() + ".weight"), ": '", spec.parts.front(),
                              "' is stored with 128x128 block scales; set quantization.weight_scaling: block"));
      return std::make_unique<Fp8ModelLinear>(Fp8Linear(std::move(w), std::move(bias), as, a_pow2, spec.name));
    }
    auto [weight, bias] = model::read_dense_projection(spec, reader);
    if (precision == Precision::bf16) return std::make_unique<model::DenseLinear>(std::move(weight), std::move(bias));
    Fp8Weight w = quantize_weight(weight.detach(), ws, fmt, w_pow2, spec.name + ".weight");
    weight = at::Tensor();  // the BF16 copy is released here, before the next projection loads
    return std::make_unique<Fp8ModelLinear>(Fp8Linear(std::move(w), std::move(bias), as, a_pow2, spec.name));
  };
}

model::FusePolicy fp8_fuse_policy(const PrecisionPlan& plan, const recipe::QuantizationConfig& q) {
  auto shared_plan = std::make_shared<const PrecisionPlan>(plan);
  const WeightScaling ws = parse_weight_scaling(q.weight_scaling);
  return [shared_plan, ws](const model::ProjectionGroup& group, const model::WeightReader& reader) {
    const safetensors::Checkpoint& ckpt = reader.checkpoint();
    const model::ProjectionSpec& first = group.parts.front();
    const ModulePlan* m0 = shared_plan->find(first.name);
    FP8RL_CHECK(m0 != nullptr, cat("fp8_fuse_policy: module ", first.name, " is not in the precision plan"));
    const bool fp8_stored = stored_fp8(ckpt, first.name);
    bool aligned = true;
    for (const model::ProjectionSpec& part : group.parts) {
      const ModulePlan* m = shared_plan->find(part.name);
      FP8RL_CHECK(m != nullptr, cat("fp8_fuse_policy: module ", part.name, " is not in the precision plan"));
      if (m->precision != m0->precision || stored_fp8(ckpt, part.name) != fp8_stored) return false;
      aligned = aligned && part.out_features() % kFp8Block == 0;
    }
    if (fp8_stored) return aligned;  // stored block scales concatenate exactly only when aligned
    if (m0->precision == Precision::bf16) return true;
    switch (ws) {
      case WeightScaling::block: return aligned;
      case WeightScaling::channel: return true;
      case WeightScaling::tensor: return false;
    }
    return false;
  };
}

model::LoadOptions fp8_load_options(const PrecisionPlan& plan, const recipe::QuantizationConfig& q, model::LoadOptions base) {
  base.linear = fp8_linear_factory(plan, q);
  base.fuse = fp8_fuse_policy(plan, q);
  base.factory_tensor_suffixes = {".weight_scale_inv"};
  return base;
}

PrecisionPlan make_model_precision_plan(const std::string& model_dir, const hf::ModelShape& shape,
                                        const recipe::QuantizationConfig& q, const std::string& dtype) {
  std::vector<std::string> not_converted;
  if (q.quant_method == "fp8")  // a pre-quantized checkpoint must be one we can run as stored
    if (const std::optional<HfFp8Config> c = read_hf_fp8_config(model_dir)) not_converted = c->modules_to_not_convert;
  return make_precision_plan(shape, q, dtype, not_converted);
}

model::CausalLM load_causal_lm(const std::string& model_dir, const recipe::QuantizationConfig& q,
                               const model::LoadOptions& base, PrecisionPlan* plan_out) {
  const model::ModelConfig config = model::read_model_config(model_dir);
  const safetensors::Checkpoint ckpt(model_dir);
  model::LoadOptions o = base;
  o.linear = model::dense_linear_factory();
  o.fuse = model::LoadOptions{}.fuse;
  const std::string dtype = base.dtype == at::kFloat ? "float32" : "bfloat16";
  const PrecisionPlan plan = make_model_precision_plan(model_dir, config.shape, q, dtype);
  if (q.quant_method == "fp8") {
    o = fp8_load_options(plan, q, o);
  } else {
    check_model_dir(model_dir, q);  // refuses FP8 tensors by name, before any weight is read
  }
  if (plan_out) *plan_out = plan;
  return model::CausalLM::load(config, ckpt, o);
}

int64_t check_model_dir(const std::string& model_dir, const recipe::QuantizationConfig& q) {
  const model::ModelConfig config = model::read_model_config(model_dir);
  const safetensors::Checkpoint ckpt(model_dir);
  int64_t fp8 = 0;
  for (const model::TensorSpec& spec : model::checkpoint_tensors(config)) {
    const auto& v = ckpt.expect_shape(spec.name, spec.shape);
    using safetensors::Dtype;
    if (v.dtype == Dtype::BF16 || v.dtype == Dtype::F16 || v.dtype == Dtype::F32) continue;
    if (v.dtype != Dtype::F8_E4M3)  // F8_E5M2, integers, BOOL...: no loader reads them as weights
      throw ConfigError(cat(ckpt.file_of(spec.name), ": tensor '", spec.name, "' is ", safetensors::dtype_name(v.dtype),
                            "; weights must be BF16, F16 or F32 (or F8_E4M3 with weight_scale_inv under "
                            "quantization.quant_method: fp8)"));
    ++fp8;
    if (q.quant_method != "fp8")
      throw ConfigError(cat(ckpt.file_of(spec.name), ": tensor '", spec.name,
                            "' is FP8 (a pre-quantized checkpoint); it needs quantization.quant_method: fp8"));
    const std::string scale = spec.name.substr(0, spec.name.size() - 7) + ".weight_scale_inv";  // ".weight"
    if (!ckpt.contains(scale))
      throw ConfigError(cat(ckpt.file_of(spec.name), ": FP8 tensor '", spec.name, "' has no '", scale, "' beside it"));
    if (ckpt.get(scale).dtype != Dtype::F32)
      throw ConfigError(cat(ckpt.file_of(scale), ": tensor '", scale, "' is ", safetensors::dtype_name(ckpt.get(scale).dtype),
                            "; FP8 scales must be F32"));
  }
  if (fp8 > 0) read_hf_fp8_config(model_dir);
  return fp8;
}

}  // namespace fp8rl::quant
