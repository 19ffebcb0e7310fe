#include "trainer/full_finetune.h"

#include <ATen/core/grad_mode.h>

#include <torch/csrc/autograd/custom_function.h>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::trainer {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

ForwardPrecision parse_forward_precision(const std::string& name) {
  if (name == "bf16") return ForwardPrecision::bf16;
  if (name == "fp8") return ForwardPrecision::fp8;
  throw ConfigError("trainer.forward_precision: expected bf16 or fp8, got '" + name + "'");
}

namespace {

// y = FP8 GEMM(x, W_fp8) without the bias (MasterWeightLinear adds it); dX through W_fp8,
// dW = dY^T X in FP8 onto the master. The master is an input only so autograd routes dW to it;
// its values are not read (the FP8 copy is its image).
struct MasterFp8Function : public torch::autograd::Function<MasterFp8Function> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x2d, const at::Tensor& master,
                            const quant::Fp8Linear* layer) {
    const quant::Fp8Weight& w = layer->weight();
    ctx->save_for_backward({x2d, w.data, w.scale});
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    at::AutoGradMode no_grad(false);
    return layer->project(x2d);  // no bias: MasterWeightLinear::forward adds it, differentiably
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();  // throws if requantized in between
    const auto* layer = reinterpret_cast<const quant::Fp8Linear*>(ctx->saved_data["layer"].toInt());
    const at::Tensor& dy = grad_outputs[0];
    at::Tensor dx = quant::fp8_linear_grad_input(dy, layer->weight(), layer->act_scaling());
    at::Tensor dw = quant::fp8_linear_grad_weight(dy, saved[0], layer->weight(), layer->act_scaling());
    return {dx, dw, at::Tensor()};
  }
};

}  // namespace

MasterWeightLinear::MasterWeightLinear(std::unique_ptr<quant::Fp8ModelLinear> fp8, at::Tensor master,
                                       ForwardPrecision precision, std::shared_ptr<const PolicyMode> mode)
    : fp8_(std::move(fp8)), master_(std::move(master)), precision_(precision), mode_(std::move(mode)) {
  const quant::Fp8Weight& w = fp8_->fp8().weight();
  FP8RL_CHECK(master_.dim() == 2 && master_.size(0) == w.out_features && master_.size(1) == w.in_features &&
                  master_.scalar_type() == at::kFloat,
              cat("MasterWeightLinear: master ", master_.sizes(), " does not match ", fp8_->fp8().label()));
  master_.set_requires_grad(true);
}

at::Tensor MasterWeightLinear::forward(const at::Tensor& x) {
  if (mode_->rollout) return fp8_->forward(x);
  const quant::Fp8Linear& layer = fp8_->fp8();
  at::Tensor y;
  if (precision_ == ForwardPrecision::bf16) {
    y = at::matmul(x, master_.to(x.scalar_type()).t());
  } else {
    std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
    out_shape.back() = layer.weight().out_features;
    y = MasterFp8Function::apply(x.reshape({-1, layer.weight().in_features}), master_, &layer).view(out_shape);
  }
  if (layer.bias().defined()) y = y + layer.bias().to(y.scalar_type());
  return y;
}

void MasterWeightLinear::visit(const std::string& module, const model::TensorVisitor& fn) const {
  fp8_->visit(module, fn);
  fn({module + ".master_weight", master_, model::dense_role(master_)});
}

void MasterWeightLinear::requantize(const at::Tensor& nonfinite) {
  at::NoGradGuard no_grad;
  fp8_->fp8().requantize_(master_.detach(), nonfinite);
}

model::LinearFactory master_weight_factory(model::LinearFactory fp8_factory, ForwardPrecision precision,
                                           std::shared_ptr<const PolicyMode> mode) {
  return [fp8_factory = std::move(fp8_factory), precision, mode](
             const model::ProjectionSpec& spec, const model::WeightReader& reader) -> std::unique_ptr<model::Linear> {
    std::unique_ptr<model::Linear> linear = fp8_factory(spec, reader);
    auto* fp8 = dynamic_cast<quant::Fp8ModelLinear*>(linear.get());
    if (fp8 == nullptr) return linear;  // kept in BF16 by the plan: a dense, trainable module
    at::Tensor master;
    if (reader.checkpoint().get(spec.parts.front() + ".weight").dtype == safetensors::Dtype::F8_E4M3) {
      master = quant::dequantize(fp8->fp8().weight()).to(at::kFloat);  // exact: the stored FP8 values
    } else {
      std::vector<at::Tensor> parts;  // FP32 straight from the checkpoint, not from the FP8 copy
      for (size_t i = 0; i < spec.parts.size(); ++i) {
        const std::vector<int64_t> shape{spec.part_out[i], spec.in_features};
        parts.push_back(reader.dense(spec.parts[i] + ".weight", shape, at::kFloat));
      }
      master = parts.size() == 1 ? parts[0] : at::cat(parts, 0);
    }
    linear.release();
    return std::make_unique<MasterWeightLinear>(std::unique_ptr<quant::Fp8ModelLinear>(fp8), master.contiguous(),
                                                precision, mode);
  };
}

}  // namespace fp8rl::trainer
