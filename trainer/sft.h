// `fp8rl sft`: a supervised warm-up that gives a small model its starting skill before RL.
//
// RL from a randomly initialised model that never earns a reward learns nothing, and nothing can
// be downloaded, so the quickstart builds its own starting checkpoint reproducibly: the recipe's
// model (model.init_preset or model.path), full fine-tuning in the recipe's model.dtype without
// quantization, on the data's prompts followed by their reference answers and EOS (the loss is
// the mean negative log-likelihood of the answer tokens only), for sft.steps AdamW steps of
// sft.batch_size examples at sft.lr. At the end the greedy accuracy on the training prompts is
// measured with the rollout engine and the model is written to <run dir>/model, an HF directory
// that a train recipe names as model.path. `fp8rl train` runs the same warm-up first when its
// recipe sets sft.steps > 0 (the quickstart does), into <run dir>/sft_model, once per run.
#pragma once

#include <filesystem>

#include <ATen/core/TensorBody.h>

#include "core/recipe/load.h"
#include "trainer/setup.h"

namespace fp8rl::trainer {

int run_sft(const recipe::LoadedRecipe& loaded);

// The warm-up itself: fine-tunes task.model_dir and writes the result to `out` (an HF directory).
void supervised_warmup(const recipe::Recipe& recipe, const TaskSetup& task, at::Device device,
                       const std::filesystem::path& out);

}  // namespace fp8rl::trainer
