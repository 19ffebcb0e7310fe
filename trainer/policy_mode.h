// Which forward the policy model is serving right now, shared by the policy (trainer/policy.h)
// and the projections it made: the rollout engine's, the trainer's, or the reference policy's.
// One model serves all three, so the projections that behave differently (FP8 masters, LoRA)
// read this flag instead of the model being loaded twice.
#pragma once

namespace fp8rl::trainer {

struct PolicyMode {
  bool rollout = false;    // the engine generates: FP8 GEMMs on the shared copy, no autograd
  bool reference = false;  // the reference policy (KL loss) runs: LoRA adapters add nothing
};

}  // namespace fp8rl::trainer
