// The policy: the one CausalLM the rollout engine samples from and the trainer updates, loaded
// per the recipe (quantization, LoRA or full fine-tuning, forward precision), and the trainer's
// forward over whole sequences with log-probs of their response tokens.
//
// What trains (the tensor visitor's `trainable` role):
//   LoRA (lora.rank > 0): the adapters only (trainer/lora.h), FP32; the base -- FP8 or dense --
//     is frozen and is the very storage the engine reads.
//   full fine-tuning: every dense tensor (embeddings, norms, lm_head, BF16-kept projections)
//     and, for FP8 projections, an FP32 master each (trainer/full_finetune.h); sync_weights()
//     re-quantizes the FP8 copies in place after each optimizer step.
//
// Log-probs are of softmax(logits / temperature) in FP32 through loss/'s chunked log-prob, the
// quantity the engine reports for its samples, so old/rollout ratios compare like with like.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/model/decoder.h"
#include "core/recipe/recipe.h"
#include "quant/precision_plan.h"
#include "trainer/full_finetune.h"

namespace fp8rl::trainer {

// "auto" | "cpu" | "cuda" -> a device (ConfigError naming `what` when CUDA is asked for and
// absent); "bfloat16" | "float32" | "float16" -> a dtype.
at::Device resolve_device(const std::string& setting, const std::string& what = "trainer.device");
at::ScalarType resolve_dtype(const std::string& name, const std::string& what = "model.dtype");

// Sequences for the trainer's forward: prompt + response tokens of each sample.
struct SequenceBatch {
  std::vector<std::vector<int64_t>> prompts;    // [B][P_i]
  std::vector<std::vector<int64_t>> responses;  // [B][R_i]
  int64_t max_response() const;                 // max R_i (>= 1)
};

// Per-token results in the loss layout [B, T], T = batch.max_response(), zero past each response.
struct ResponseLogprobs {
  at::Tensor logp;     // [B, T] fp32
  at::Tensor entropy;  // [B, T] fp32
  at::Tensor mask;     // [B, T] fp32, 1 = response token
  // Keeps what the checkpointed layers' backward needs (attention context, RoPE) alive until
  // backward has run: hold the result until then.
  std::shared_ptr<void> keepalive;
};

class Policy {
 public:
  // Loads `model_dir` on `device`. Throws ConfigError for what the recipe cannot run.
  Policy(const recipe::Recipe& recipe, const std::string& model_dir, at::Device device);

  const model::CausalLM& model() const { return model_; }
  bool lora() const { return lora_; }
  const quant::PrecisionPlan& plan() const { return plan_; }
  // The tensors the optimizer updates, in model order, with their names.
  std::vector<model::ModelTensor> trainable() const;

  // While alive, the model serves the rollout engine: FP8 GEMMs for every FP8 projection.
  class RolloutScope {
   public:
    explicit RolloutScope(Policy& p) : mode_(*p.mode_) { mode_.rollout = true; }
    ~RolloutScope() { mode_.rollout = false; }
    RolloutScope(const RolloutScope&) = delete;
    RolloutScope& operator=(const RolloutScope&) = delete;
   private:
    PolicyMode& mode_;
  };
  // While alive, LoRA adapters add nothing: the reference policy (KL loss) is the base.
  class ReferenceScope {
   public:
    explicit ReferenceScope(Policy& p) : mode_(*p.mode_) { mode_.reference = true; }
    ~ReferenceScope() { mode_.reference = false; }
    ReferenceScope(const ReferenceScope&) = delete;
    ReferenceScope& operator=(const ReferenceScope&) = delete;
   private:
    PolicyMode& mode_;
  };

  // The trainer's forward: differentiable when autograd is recording (then decoder layers are
  // recomputed in backward if model.enable_gradient_checkpointing). chunk_size bounds the
  // [tokens, vocab] logits of the log-prob.
  ResponseLogprobs response_logprobs(const SequenceBatch& batch, double temperature, int64_t chunk_size = 1024) const;

  // After an optimizer step: FP8 copies re-quantized from their masters (one NaN/inf check for
  // all), weight version bumped (the engine drops cached prefixes).
  void sync_weights();

 private:
  std::shared_ptr<PolicyMode> mode_;
  quant::PrecisionPlan plan_;
  model::CausalLM model_;
  bool lora_ = false;
  bool checkpointing_ = true;
  std::vector<MasterWeightLinear*> masters_;  // full fine-tuning's FP8 projections (owned by model_)
};

}  // namespace fp8rl::trainer
