// FP8 in the model definition: the Linear that core/model's decoder calls, backed by an
// Fp8Linear, and the LinearFactory that quantizes each projection the precision plan marks FP8
// while the checkpoint is loaded. The BF16 weight of such a projection is dropped as soon as its
// FP8 copy exists, so a loaded model never holds both (peak: one BF16 matrix at a time).
#pragma once

#include <memory>
#include <string>

#include "core/model/layers.h"
#include "core/recipe.h"
#include "quant/fp8_linear.h"
#include "quant/precision_plan.h"

namespace fp8rl {

class Fp8ModelLinear final : public model::Linear {
 public:
  explicit Fp8ModelLinear(Fp8Linear layer) : layer_(std::move(layer)) {}
  at::Tensor forward(const at::Tensor& x) override { return layer_.forward(x); }
  // The FP8 weight is frozen (LoRA trains adapters beside it); only a bias is trainable.
  model::NamedTensors parameters() const override;
  const Fp8Linear& fp8() const { return layer_; }
  Fp8Linear& fp8() { return layer_; }

 private:
  Fp8Linear layer_;
};

// Projections the plan marks FP8 become Fp8ModelLinear (weights quantized with the recipe's
// scaling, format and pow2 setting; activations with the paired granularity); the others stay
// DenseLinear. A projection missing from the plan is a bug (FP8RL_CHECK).
model::LinearFactory fp8_linear_factory(const PrecisionPlan& plan, const QuantizationConfig& q);

}  // namespace fp8rl
