#include "quant/fp8_linear.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/util/error.h"
#include "core/util/log.h"
#include "quant/fp8_gemm.h"

namespace fp8rl::quant {
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
    ctx->saved_data["pow2"] = w.pow2;
    ctx->saved_data["act_scaling"] = static_cast<int64_t>(layer->act_scaling());
    return layer->project(x2d);
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
    w.pow2 = ctx->saved_data["pow2"].toBool();
    const auto act_scaling = static_cast<ActScaling>(ctx->saved_data["act_scaling"].toInt());
    return {fp8_linear_grad_input(grad_outputs[0], w, act_scaling), at::Tensor()};
  }
};

}  // namespace

Fp8Linear::Fp8Linear(Fp8Weight weight, at::Tensor bias, ActScaling act_scaling, bool act_pow2, std::string name)
    : weight_(std::move(weight)),
      bias_(std::move(bias)),
      act_scaling_(act_scaling),
      act_pow2_(act_pow2),
      name_(std::move(name)) {
  FP8RL_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == weight_.out_features),
              cat("Fp8Linear: bias must be [", weight_.out_features, "], got ", bias_.sizes()));
  // Allocated here, not at the first forward: forwards may run under CUDA-graph capture.
  if (weight_.data.is_cuda()) nonfinite_input_ = at::zeros({1}, weight_.data.options().dtype(at::kInt));
}

std::string Fp8Linear::label() const {
  return name_.empty() ? cat("FP8 linear [", weight_.out_features, " x ", weight_.in_features, "]") : name_;
}

void check_fp8_inputs_finite(const std::vector<const Fp8Linear*>& layers) {
  // Layers may sit on different devices: one cat and one copy per device (one in practice).
  std::vector<at::Device> devices;
  std::vector<std::vector<const Fp8Linear*>> on_device;
  for (const Fp8Linear* l : layers) {
    if (l == nullptr || !l->nonfinite_input_flag().defined()) continue;
    const at::Device d = l->nonfinite_input_flag().device();
    size_t k = 0;
    while (k < devices.size() && devices[k] != d) ++k;
    if (k == devices.size()) {
      devices.push_back(d);
      on_device.emplace_back();
    }
    on_device[k].push_back(l);
  }
  std::string names;
  for (const std::vector<const Fp8Linear*>& group : on_device) {
    std::vector<at::Tensor> flags;  // each int32 [1]
    for (const Fp8Linear* l : group) flags.push_back(l->nonfinite_input_flag());
    const at::Tensor host = at::cat(flags).cpu();  // [layers]: the one sync
    {
      // After the synchronous copy: a forward enqueued later sets its flag again. Inference
      // mode lets this also clear flags made under it (a model loaded for rollouts only).
      c10::InferenceMode inference;
      for (const at::Tensor& f : flags) f.zero_();
    }
    const int* set = host.data_ptr<int>();
    for (size_t i = 0; i < group.size(); ++i)
      if (set[i] != 0) names += (names.empty() ? "" : ", ") + group[i]->label();
  }
  if (!names.empty())
    throw RuntimeFailure(cat("NaN or inf in the input of ", names, "; refusing to quantize it (the run diverged)"));
}

at::Tensor Fp8Linear::project(const at::Tensor& x2d) const {
  // CPU throws naming the layer; CUDA raises the layer's flag (fp8_linear.h says why).
  const Fp8Activation qx = quantize_activation(x2d, act_scaling_, weight_.fmt, act_pow2_, nonfinite_input_flag(),
                                               x2d.is_cpu() ? "input of " + label() : std::string());
  return fp8_gemm(qx, weight_, x2d.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat);
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

at::Tensor Fp8Linear::forward_quantized(const Fp8Activation& qx) const {
  FP8RL_CHECK(qx.in_features == weight_.in_features && qx.scaling == act_scaling_ && qx.fmt == weight_.fmt,
              cat(label(), ": a pre-quantized input of ", qx.in_features, " features, ", to_string(qx.scaling),
                  " scaling does not fit this layer"));
  at::Tensor y = fp8_gemm(qx, weight_, at::kBFloat16);  // [M, N]
  if (bias_.defined()) y = y + bias_.to(y.scalar_type());
  return y;
}

bool Fp8Linear::takes_fused_input(const at::Tensor& x) const {
  return act_scaling_ != ActScaling::tensor && x.is_cuda() && x.scalar_type() == at::kBFloat16 &&
         c10::InferenceMode::is_enabled();
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

}  // namespace fp8rl::quant

namespace fp8rl::quant {

// dW = dY^T X contracts over the tokens M, so both operands are quantized along M, from the
// high-precision dY and X (the forward's FP8 copy of X is scaled along K: the wrong direction).
// fp8_gemm(a, b) computes a [rows, L] b [cols, L]^T over L; here L = M:
//   a = dY^T [N, M] as an activation (1x128 groups / one scale per row / one scale, along M),
//   b = X^T  [K, M] as a weight (128x128 blocks / one scale per row / one scale).
// Every pairing is a layout cuBLASLt runs as is (block x group, channel x token, tensor x
// tensor), with scales chosen for these operands, so the FP8 GEMM is used for all three: no
// transpose of existing scales is involved, hence nothing inexact about the layout (the only
// error is the E4M3 rounding of dY and X). Tensor and channel pairs run with fast accumulation,
// as every fp8_gemm of those granularities does (fp8_gemm_fast_accum).
// Non-finite values are not checked here (no flag, no sync): NaN/inf in dY or X quantize to
// NaN or to NaN-producing scales and reach dW as NaN, as in a float GEMM, where the trainer's
// gradient-norm check sees them; X was checked on its way into the forward.
at::Tensor fp8_linear_grad_weight(const at::Tensor& grad_out, const at::Tensor& x, const Fp8Weight& w,
                                  ActScaling act_scaling) {
  const int64_t N = w.out_features, K = w.in_features;
  FP8RL_CHECK(grad_out.dim() >= 1 && grad_out.size(-1) == N && x.dim() >= 1 && x.size(-1) == K &&
                  grad_out.numel() / N == x.numel() / K,
              cat("fp8_linear_grad_weight: dY ", grad_out.sizes(), " and X ", x.sizes(), " do not fit a [", N, ", ",
                  K, "] weight"));
  const at::Tensor dy = grad_out.reshape({-1, N});  // [M, N]
  const at::Tensor x2 = x.reshape({-1, K});         // [M, K]
  const int64_t M = dy.size(0);
  if (!dy.is_cuda() || M == 0) {
    // The float reference (CPU), and M == 0 (an empty contraction: zeros, which the padded FP8
    // operands with no columns cannot express).
    return at::matmul(dy.to(at::kFloat).t(), x2.to(at::kFloat));  // [N, K]
  }
  const at::Tensor dyt = dy.t().contiguous();  // [N, M]
  const at::Tensor xt = x2.t().contiguous();   // [K, M]
  Fp8Activation a = quantize_activation(dyt, act_scaling, w.fmt, false);
  Fp8Weight b = empty_fp8_weight(K, M, w.scaling, w.fmt, false, xt.device());
  // quantize_weight would sync on its flag once per call; a scratch flag nobody reads instead
  // (see above for where non-finite values are caught).
  quantize_weight_into(xt, b, at::zeros({1}, xt.options().dtype(at::kInt)));
  return fp8_gemm(a, b, at::kFloat);  // [N, K]
}

}  // namespace fp8rl::quant
