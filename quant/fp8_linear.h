// An FP8 linear layer: y = x W^T (+ b) with W [N, K] held once, in FP8, and read by both the
// rollout engine and the trainer.
//
// Forward: quantize x (dynamic, the recipe's activation granularity), FP8 GEMM (fp8_gemm.h),
// output in x's dtype, + bias. Backward (LoRA training: W is frozen) gives only dX = dY W:
//   CUDA, block or tensor scaling: W^T by transposing the FP8 bytes and block scales (exact),
//     dY quantized in 1x128 groups along N (or per tensor), then the FP8 GEMM;
//   channel scaling (no exact transpose) and CPU: dY @ dequantize(W).
// `fp8rl bench gemm` measured the FP8 path 1.5x faster than dequantize + BF16 GEMM at
// M >= 1024 on H100 (docs/BENCHMARKS.md), hence the choice. The bias gets its gradient if it
// requires one.
//
// Non-finite inputs (scaling.h promises they are never cast silently): a NaN/inf entering the
// forward is where a diverging run first touches FP8, so it is caught there and named.
//   CPU: the forward throws RuntimeFailure naming the layer (the check is part of quantizing, no
//     sync to avoid).
//   CUDA: the quantization kernel sets this layer's device flag; nothing waits for it. A host
//     check per call would stall the launch queue on every projection of every decode step (and
//     cannot run inside CUDA-graph capture), so the caller checks all layers once per step with
//     check_fp8_inputs_finite: one device-to-host copy, an error naming every flagged layer.
//     One flag per layer (4 bytes) rather than one per model, so that the error names the layer.
// Full fine-tuning's weight gradient is a separate function (fp8_linear_grad_weight below): the
// trainer calls it with the layer's input and dY; the FP8 weight itself is not an autograd leaf.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "quant/scaling.h"

namespace fp8rl::quant {

class Fp8Linear {
 public:
  // bias: [N] or undefined. act_scaling must pair with weight.scaling (block-group,
  // channel-token, tensor-tensor). name: the module's name for error messages (e.g.
  // "model.layers.3.mlp.up_proj"); empty gives "FP8 linear [N x K]".
  Fp8Linear(Fp8Weight weight, at::Tensor bias, ActScaling act_scaling, bool act_pow2, std::string name = {});

  // x [..., K] float32 or bfloat16 -> [..., N] in x's dtype. Differentiable w.r.t. x and bias.
  at::Tensor forward(const at::Tensor& x) const;

  // The projection alone, without the bias and without autograd: x2d [M, K] float32 or bfloat16
  // quantized as forward() does (the same input checks) -> [M, N] in x2d's dtype. For autograd
  // functions that own the backward (full fine-tuning's master weights) and add the bias after.
  at::Tensor project(const at::Tensor& x2d) const;

  // The forward from an input already quantized as this layer would (x's 1x128 groups or
  // per-token scales, by a fused kernel: scaling.h rms_norm_quantize_activation): qx [M, K] ->
  // [M, N] bfloat16. No autograd (inference). takes_fused_input says when the fused kernels make
  // this layer's input: CUDA bfloat16 under InferenceMode, group- or token-scaled activations.
  at::Tensor forward_quantized(const Fp8Activation& qx) const;
  bool takes_fused_input(const at::Tensor& x) const;

  // Full fine-tuning sync: quantize new values w [N, K] into the existing FP8 and scale storage
  // (same data pointers, so every holder of this weight sees the update), with the weight's own
  // scaling, format and pow2 setting (Fp8Weight::pow2). Through the quantization kernel, with
  // no full-size temporary and no host sync: NaN/inf in w sets `nonfinite` (int32 [1] on the
  // weight's device), which the caller checks once after requantizing every matrix
  // (throw_if_nonfinite in scaling.h). A graph that saved this weight for backward refuses to
  // run afterwards (version counters).
  void requantize_(const at::Tensor& w, const at::Tensor& nonfinite);

  const Fp8Weight& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  ActScaling act_scaling() const { return act_scaling_; }
  bool act_pow2() const { return act_pow2_; }
  const std::string& name() const { return name_; }
  // int32 [1] on the weight's device, set to 1 by a CUDA forward whose input held NaN/inf;
  // undefined for CPU weights (their forward throws instead). Shared by copies of the layer.
  const at::Tensor& nonfinite_input_flag() const { return nonfinite_input_; }
  std::string label() const;  // name(), or "FP8 linear [N x K]" when unnamed

 private:

  Fp8Weight weight_;
  at::Tensor bias_;
  ActScaling act_scaling_;
  bool act_pow2_;
  std::string name_;
  at::Tensor nonfinite_input_;  // int32 [1], CUDA weights only
};

// The step-level check of the CUDA forwards' input flags: one host sync for all `layers`
// (null entries and CPU layers are skipped). Throws RuntimeFailure naming every layer whose
// input held NaN/inf since the last check; clears the flags it read either way.
void check_fp8_inputs_finite(const std::vector<const Fp8Linear*>& layers);

// dX [M, K] = dY [M, N] @ W [N, K] through the frozen FP8 weight (the backward above).
at::Tensor fp8_linear_grad_input(const at::Tensor& grad_out, const Fp8Weight& w, ActScaling act_scaling);

// Full fine-tuning: dW [N, K] = dY^T [N, M] @ X [M, K], float32, for the weight `w` stands for
// (its shape, scaling and format; its values are not used). grad_out [..., N] and x [..., K]
// (float32 or bfloat16) share their leading dims; M is their product.
//   CUDA: dY^T and X^T quantized along M (the contraction) in the layer's granularity pairing,
//     then the FP8 GEMM (fp8_linear.cpp says why every pairing is exact in layout);
//   CPU: the float32 product dY^T X (the reference).
at::Tensor fp8_linear_grad_weight(const at::Tensor& grad_out, const at::Tensor& x, const Fp8Weight& w,
                                  ActScaling act_scaling);

}  // namespace fp8rl::quant
