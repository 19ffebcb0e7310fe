// Full fine-tuning of an FP8 model: one FP32 master weight per FP8 projection, updated by the
// optimizer; after every optimizer step the FP8 copy the rollout engine reads is re-quantized
// from it IN PLACE (Fp8Linear::requantize_: same storage, no new allocation), so the engine and
// the trainer keep sharing one FP8 copy. Projections the precision plan keeps in BF16, the
// embeddings, norms and lm_head are dense tensors of the model itself, trained directly (the
// optimizer keeps FP32 masters of the BF16 ones) and shared with the engine as they are.
//
// The trainer's forward through such a projection is a recipe knob, trainer.forward_precision:
//   fp8:  the FP8 GEMM on the shared FP8 weight, forward and backward (dX through the transposed
//         FP8 weight, dW = dY^T X in FP8 with both operands quantized along the tokens:
//         quant/fp8_linear.h), the gradient landing on the master. The rollout and the trainer
//         then run the same GEMMs (NVIDIA's "FP8 end to end").
//   bf16: y = x W^T with W = master cast to the model dtype per call (verl / NeMo-RL's "FP8
//         rollout, BF16 training"). The BF16 working weight is a temporary: one projection's
//         worth per call, kept by autograd until backward (with activation checkpointing, one
//         decoder layer's worth at a time), never a second full copy of the model.
// The rollout engine always runs the FP8 GEMM: a PolicyMode flag, set while the engine runs,
// tells the projections which of the two they are serving.
#pragma once

#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "core/model/layers.h"
#include "quant/fp8_model.h"
#include "trainer/policy_mode.h"

namespace fp8rl::trainer {

enum class ForwardPrecision { bf16, fp8 };
ForwardPrecision parse_forward_precision(const std::string& name);  // "bf16" | "fp8"


class MasterWeightLinear final : public model::Linear {
 public:
  // `master` [N, K] fp32 (requires_grad is set here).
  MasterWeightLinear(std::unique_ptr<quant::Fp8ModelLinear> fp8, at::Tensor master, ForwardPrecision precision,
                     std::shared_ptr<const PolicyMode> mode);
  at::Tensor forward(const at::Tensor& x) override;
  // The FP8 weight and scale (fp8_data/fp8_scale, as Fp8ModelLinear names them), its bias, then
  // `<module>.master_weight` [N, K] fp32 (trainable).
  void visit(const std::string& module, const model::TensorVisitor& fn) const override;
  // The FP8 copy <- master, in place; NaN/inf set `nonfinite` (checked once per sync by the caller).
  void requantize(const at::Tensor& nonfinite);
  const quant::Fp8Linear& fp8() const { return fp8_->fp8(); }

 private:
  std::unique_ptr<quant::Fp8ModelLinear> fp8_;
  at::Tensor master_;  // [N, K] fp32
  ForwardPrecision precision_;
  std::shared_ptr<const PolicyMode> mode_;
};

// Wraps the FP8 factory: FP8 projections become MasterWeightLinear with a master read from the
// checkpoint in FP32 (or dequantized, exactly, from a stored FP8 weight); BF16 ones stay dense.
model::LinearFactory master_weight_factory(model::LinearFactory fp8_factory, ForwardPrecision precision,
                                           std::shared_ptr<const PolicyMode> mode);

}  // namespace fp8rl::trainer
