// `fp8rl train`: from a loaded recipe to a run directory and the RL loop.
#pragma once

#include "core/recipe/load.h"

namespace fp8rl::trainer {

// Validates the recipe, opens the run directory (refusing to overwrite a finished run unless
// resuming), saves the resolved recipe into it, logs it, then runs the RL loop.
// Returns the process exit code; throws ConfigError / RuntimeFailure like the rest of fp8rl.
int run_train(const recipe::LoadedRecipe& loaded);

// Before a launch of trainer.n_gpus_per_node ranks on this node: the recipe is valid and, when
// trainer.device resolves to CUDA, that many GPUs are visible (ConfigError naming the key).
void check_local_ranks(const recipe::LoadedRecipe& loaded);

}  // namespace fp8rl::trainer
