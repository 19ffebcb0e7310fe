// FP8 in the model definition: the Linear that core/model's decoder calls, backed by an
// Fp8Linear, and the LinearFactory that quantizes each projection the precision plan marks FP8
// while the checkpoint is loaded. The decoder converts tensors only when it hands them over, and
// the BF16 weight of such a projection is dropped as soon as its FP8 copy exists, so a loaded
// model never holds both (peak: the FP8 model so far plus one BF16 matrix).
//
// Pre-quantized HF FP8 checkpoints (quant/hf_fp8.h) load through load_causal_lm as well: their
// FP8 bytes and block scales are used as stored (no requantization); projections the plan keeps
// in BF16 are dequantized exactly.
#pragma once

#include <memory>
#include <string>

#include "core/model/decoder.h"
#include "core/model/layers.h"
#include "core/hf/safetensors.h"
#include "core/recipe/recipe.h"
#include "quant/fp8_linear.h"
#include "quant/precision_plan.h"

namespace fp8rl::quant {

class Fp8ModelLinear final : public model::Linear {
 public:
  explicit Fp8ModelLinear(Fp8Linear layer) : layer_(std::move(layer)) {}
  at::Tensor forward(const at::Tensor& x) override { return layer_.forward(x); }
  // Under InferenceMode on CUDA the input is made and quantized in one kernel (scaling.h
  // rms_norm_quantize_activation / silu_mul_quantize_activation; with the residual add before
  // the norm, add_rms_norm_quantize_activation), bit for bit the unfused result; elsewhere, and
  // with FP8RL_FUSED_ACT_QUANT=0 (for before/after benchmarks), as Linear.
  at::Tensor forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps) override;
  at::Tensor forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& norm_weight,
                                    double eps, at::Tensor& sum) override;
  at::Tensor forward_silu_mul(const at::Tensor& gate_up) override;
  // `<module>.weight` (fp8_data, [Np, Kp]) and `<module>.weight_scale_inv` (fp8_scale; HF's name
  // for the scale a block is multiplied back by), then the bias. The FP8 weight is frozen (LoRA
  // trains adapters beside it; full fine-tuning re-quantizes it in place); only a bias trains.
  void visit(const std::string& module, const model::TensorVisitor& fn) const override;
  const Fp8Linear& fp8() const { return layer_; }
  Fp8Linear& fp8() { return layer_; }

 private:
  Fp8Linear layer_;
};

// Projections the plan marks FP8 become Fp8ModelLinear (weights quantized with the recipe's
// scaling, format and pow2 setting; activations with the paired granularity); the others stay
// DenseLinear. A projection missing from the plan is a bug (FP8RL_CHECK). A projection whose
// weight the checkpoint stores as F8_E4M3 (HF FP8 checkpoints) is used as stored, FP8 bytes and
// block scales, with no requantization; if the plan keeps it in BF16 it is dequantized exactly.
// A fused projection (architecture.h) is quantized, or its stored parts concatenated, as one.
model::LinearFactory fp8_linear_factory(const PrecisionPlan& plan, const recipe::QuantizationConfig& q);

// Which q/k/v and gate/up groups may run fused under `plan`: their parts share one precision and
// are stored alike (all FP8 or none), and for FP8 the fused weight quantizes exactly as the
// parts would: block scales need every part's rows 128-aligned (no block straddles two parts);
// per-channel scales always fuse; a per-tensor scale would become one scale for all parts, so
// those stay separate.
model::FusePolicy fp8_fuse_policy(const PrecisionPlan& plan, const recipe::QuantizationConfig& q);

// `base` with the FP8 factory, its fuse policy and the scale tensors it reads (the three go
// together: a factory without its policy would fuse unaligned block-scaled parts). What
// load_causal_lm uses; for callers that load with a plan of their own.
model::LoadOptions fp8_load_options(const PrecisionPlan& plan, const recipe::QuantizationConfig& q, model::LoadOptions base);

// The precision plan of the model in `model_dir` under the recipe's quantization: the recipe's
// rules and, for an FP8 checkpoint, its quantization_config.modules_to_not_convert, which stay
// dense (an export with BF16 first/last layers lists them; loading it under another recipe must
// not quantize them). Throws ConfigError for an FP8 quantization_config fp8rl cannot run.
PrecisionPlan make_model_precision_plan(const std::string& model_dir, const hf::ModelShape& shape,
                                        const recipe::QuantizationConfig& q, const std::string& dtype);

// Loads `model_dir` (BF16 or HF FP8) with the recipe's quantization: the precision plan is made
// from its config.json; quant_method none loads a dense model (and refuses an FP8 checkpoint by
// name). `base` gives dtype, device and requires_grad; its linear factory and fuse policy are
// replaced.
model::CausalLM load_causal_lm(const std::string& model_dir, const recipe::QuantizationConfig& q,
                               const model::LoadOptions& base, PrecisionPlan* plan_out = nullptr);

// What load_causal_lm would refuse, found without reading any weight (headers only): an
// unsupported config, a missing tensor or shape mismatch, an FP8 checkpoint under
// quant_method: none, an FP8 quantization_config fp8rl cannot run. Throws ConfigError naming the
// file and tensor; returns the number of FP8 tensors the checkpoint stores.
int64_t check_model_dir(const std::string& model_dir, const recipe::QuantizationConfig& q);

}  // namespace fp8rl::quant
