// AdamW with FP32 state and FP32 master weights, global gradient-norm clipping and the learning
// rate schedule (linear warm-up, then constant or cosine decay to 0).
//
// Update (Loshchilov & Hutter's decoupled weight decay, as torch.optim.AdamW), per tensor p with
// gradient g, at step t (1-based):
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// A tensor held in BF16/FP16 (full fine-tuning of a BF16 model) is updated through an FP32
// master copy kept here and copied back after each step, so small updates are not rounded away.
//
// The state is named by the tensors' model names, so checkpoints are readable and a resumed run
// finds every moment by name (state_tensors / load_state).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/model/tensor_visitor.h"
#include "core/recipe/recipe.h"

namespace fp8rl::trainer {

struct AdamWOptions {
  double lr = 1e-6, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

// lr at optimizer step `step` (0-based): base * (step + 1) / warmup during warm-up, then constant,
// or cosine from base to 0 over the remaining steps of `total`.
double scheduled_lr(double base, int64_t step, int64_t warmup, int64_t total, const std::string& scheduler);

// trainer.adam_beta1/2, adam_eps, weight_decay with learning rate `lr`.
AdamWOptions adamw_options(const recipe::TrainerConfig& trainer, double lr);

class AdamW {
 public:
  // `params`: the trainable tensors (requires_grad leaves), by name.
  AdamW(std::vector<model::ModelTensor> params, AdamWOptions options);

  // sqrt(sum of squared gradients) over all tensors (a missing gradient counts as zero), in FP64,
  // read back with one host sync. If max_norm > 0 and the norm exceeds it, gradients are scaled by
  // max_norm / (norm + 1e-6) (torch.nn.utils.clip_grad_norm_).
  double clip_grad_norm(double max_norm);
  // One update at learning rate `lr`, then the gradients are cleared. Tensors without a gradient
  // are left alone (their moments do not decay), as torch does.
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return step_; }
  // The trainable tensors, in construction order (data parallelism sums their gradients).
  std::vector<at::Tensor> parameters() const;

  // Moments (`<name>.exp_avg`, `<name>.exp_avg_sq`) and FP32 masters (`<name>.master`), on their
  // devices, plus "step" as an int64 [1] tensor.
  std::map<std::string, at::Tensor> state_tensors() const;
  // Restores state_tensors(); every tensor must be present with the right shape (ConfigError
  // naming `source` and the tensor otherwise). Masters are copied into the parameters as well.
  void load_state(const std::map<std::string, at::Tensor>& state, const std::string& source);

 private:
  struct Slot {
    std::string name;
    at::Tensor param;          // the model's tensor (any float dtype)
    at::Tensor master;         // FP32 copy when param is not FP32, else undefined
    at::Tensor exp_avg, exp_avg_sq;  // FP32, like the master
  };
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

}  // namespace fp8rl::trainer
