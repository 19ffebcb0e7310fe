// LoRA adapters (Hu et al. 2021) on any projection of the decoder, dense or FP8:
//
//   y = base(x) + (alpha / r) * B(A(dropout(x)))      A [r, K] fp32, B [N, r] fp32 (zero at init)
//
// The base Linear is the one the rollout engine runs (the FP8 copy with quantization_method fp8),
// so adapters add to the shared weights instead of copying them. They sit on the HF modules
// (q_proj, k_proj, ..., as PEFT names them): a fused projection (qkv_proj, gate_up_proj) carries
// one adapter per part, so adapters export to PEFT unchanged, and target_modules may pick some
// parts of a fused group only (the others add nothing).
//
// A and B stay FP32 (as does their optimizer state); the input is cast to FP32 for the adapter
// path and the result cast back to the base output's dtype. Dropout is applied only while
// autograd records (the update phase); rollouts and the old-log-prob recompute see the adapters
// without it, as PEFT's eval mode does. Under PolicyMode::reference they add nothing (the
// reference policy of the KL loss is the base).
//
// Storage: a projection's adapters live in two packed FP32 tensors, A [P r, K] (the P adapted
// parts' A stacked) and B [N, P r] (block-diagonal: part i's B in its own output rows and columns
// i r .. (i+1) r, zeros elsewhere). Each part's a and b are leaves that alias their block (detach()
// shares the storage), so autograd, AdamW, checkpoints and export see per-part tensors as before.
//
// The rollout engine (InferenceMode) runs the adapters as two GEMMs in the activations' dtype,
// h = x A^T then y += scaling h B^T into the base output, instead of ~3 FP32 kernels per part plus
// a cast, a concat, a scale and an add: a Qwen3-8B decode step has ~250 adapted parts. This is
// what vLLM does with the LoRA weights verl hands it (BF16 adapters); the trainer's forward keeps
// FP32. The BF16 copies of A and B are refreshed in place when the packed tensors' version
// counter moved (any in-place update of a part's a or b, e.g. AdamW's or a checkpoint load, bumps
// it): the engine's first forward of a rollout is an eager prefill, which refreshes them before
// any CUDA graph replays the decode, and the copies keep their addresses for the graphs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/model/layers.h"
#include "core/recipe/recipe.h"
#include "trainer/policy_mode.h"

namespace fp8rl::trainer {

// Whether the HF module `name` ("model.layers.3.self_attn.q_proj") is a LoRA target of
// lora.target_modules: "all-linear" (every decoder projection), or module suffixes (q_proj, ...).
bool is_lora_target(const std::string& name, const std::vector<std::string>& target_modules);

class LoraLinear final : public model::Linear {
 public:
  // One adapter per part of `spec` that is a target; A drawn as PEFT's kaiming_uniform(a=sqrt(5))
  // (uniform in +-1/sqrt(K)) from a CPU generator seeded with `seed` and the part's name.
  LoraLinear(std::unique_ptr<model::Linear> base, const model::ProjectionSpec& spec, const recipe::LoraConfig& lora,
             uint64_t seed, at::Device device, std::shared_ptr<const PolicyMode> mode);
  at::Tensor forward(const at::Tensor& x) override;
  // The base's tensors, then `<part>.lora_A.weight` [r, K] and `<part>.lora_B.weight` [N_part, r]
  // (trainable) for each adapted part, under the part's HF name.
  void visit(const std::string& module, const model::TensorVisitor& fn) const override;
  const model::Linear& base() const { return *base_; }

 private:
  struct Adapter {
    std::string part;  // HF module name
    int64_t offset = 0, out = 0;  // rows of the projection's output it adds to
    at::Tensor a, b;   // [r, K], [out, r] fp32, requires_grad
  };
  // The engine's path: y += scaling * (x A^T) B^T over copies of the packed tensors in y's dtype.
  at::Tensor forward_packed(const at::Tensor& x, at::Tensor y);

  std::unique_ptr<model::Linear> base_;
  std::vector<Adapter> adapters_;
  at::Tensor a_packed_, b_packed_;  // [P r, K], [N, P r] fp32; the adapters' a and b alias blocks of them
  at::Tensor a_infer_, b_infer_;    // the same in BF16/FP16 (unused for an FP32 model), made by forward_packed
  int64_t a_seen_ = -1, b_seen_ = -1;  // the packed tensors' versions the copies were made at
  int64_t out_features_ = 0;
  double scaling_ = 1.0, dropout_ = 0.0;
  std::shared_ptr<const PolicyMode> mode_;
};

// Wraps `base`: projections with at least one targeted part become LoraLinear.
model::LinearFactory lora_linear_factory(model::LinearFactory base, const recipe::LoraConfig& lora, uint64_t seed,
                                         std::shared_ptr<const PolicyMode> mode);

}  // namespace fp8rl::trainer
