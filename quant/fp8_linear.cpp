#include "quant/fp8_linear.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/error.h"
#include "core/log.h"
#include "quant/fp8_gemm.h"

namespace fp8rl {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x2d [M, K] -> x2d W^T [M, N]. The FP8 weight is not an autograd input (it is frozen); the
// bias is added outside with ordinary autograd ops (custom functions take no undefined inputs).
//
// The weight's data and scale tensors are saved for backward (save_for_backward), never the
// layer itself: a pointer to the Fp8Linear would dangle once the layer is moved or destroyed
// before backward, and would hide a requantize_ between forward and backward. Saved variables
// record the tensors' version counters, so backward after an in-place requantization raises
// autograd's "modified by an inplace operation" error instead of differentiating through the
// new weight. The remaining fields of Fp8Weight are plain values in saved_data.
struct Fp8LinearFunction : public torch::autograd::Function<Fp8LinearFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x2d, const Fp8Linear* layer) {
    const Fp8Weight& w = layer->weight();
    ctx->save_for_backward({w.data, w.scale});
    ctx->saved_data["out_features"] = w.out_features;
    ctx->saved_data["in_features"] = w.in_features;
    ctx->saved_data["fmt"] = static_cast<int64_t>(w.fmt);
    ctx->saved_data["scaling"] = static_cast<int64_t>(w.scaling);
    ctx->saved_data["act_scaling"] = static_cast<int64_t>(layer->act_scaling());
    Fp8Activation qx = quantize_activation(x2d, layer->act_scaling(), w.fmt, layer->act_pow2());
    return fp8_gemm(qx, w, x2d.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();  // throws if the weight changed in place
    Fp8Weight w;
    w.data = saved[0];
    w.scale = saved[1];
    w.out_features = ctx->saved_data["out_features"].toInt();
    w.in_features = ctx->saved_data["in_features"].toInt();
    w.fmt = static_cast<Fp8Format>(ctx->saved_data["fmt"].toInt());
    w.scaling = static_cast<WeightScaling>(ctx->saved_data["scaling"].toInt());
    const auto act_scaling = static_cast<ActScaling>(ctx->saved_data["act_scaling"].toInt());
    return {fp8_linear_grad_input(grad_outputs[0], w, act_scaling), at::Tensor()};
  }
};

}  // namespace

Fp8Linear::Fp8Linear(Fp8Weight weight, at::Tensor bias, ActScaling act_scaling, bool act_pow2)
    : weight_(std::move(weight)), bias_(std::move(bias)), act_scaling_(act_scaling), act_pow2_(act_pow2) {
  FP8RL_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == weight_.out_features),
              cat("Fp8Linear: bias must be [", weight_.out_features, "], got ", bias_.sizes()));
}

at::Tensor Fp8Linear::forward(const at::Tensor& x) const {
  FP8RL_CHECK(x.dim() >= 1 && x.size(-1) == weight_.in_features,
              cat("Fp8Linear: input ", x.sizes(), " does not end in K = ", weight_.in_features));
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = weight_.out_features;
  at::Tensor y = Fp8LinearFunction::apply(x.reshape({-1, weight_.in_features}), this);
  if (bias_.defined()) y = y + bias_.to(y.scalar_type());
  return y.view(out_shape);
}

void Fp8Linear::requantize_(const at::Tensor& w, const at::Tensor& nonfinite) {
  quantize_weight_into(w, weight_, nonfinite);
}

at::Tensor fp8_linear_grad_input(const at::Tensor& grad_out, const Fp8Weight& w, ActScaling act_scaling) {
  const at::ScalarType out = grad_out.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
  if (grad_out.is_cuda() && w.scaling != WeightScaling::channel) {
    const Fp8Weight wt = transpose_weight(w);  // [K, N]: exact
    return fp8_gemm(quantize_activation(grad_out.contiguous(), act_scaling, w.fmt, false), wt, out);
  }
  return at::matmul(grad_out.to(at::kFloat), dequantize(w)).to(out);
}

}  // namespace fp8rl
