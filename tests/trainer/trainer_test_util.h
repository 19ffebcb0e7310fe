// Helpers of the trainer tests: the quickstart recipe with overrides, in a temporary run
// directory, and a tiny model directory to load policies from.
#pragma once

#include <string>
#include <vector>

#include "core/model/random_checkpoint.h"
#include "core/recipe/load.h"
#include "core/recipe/model_presets.h"
#include "tests/test_util.h"

namespace fp8rl::test {

inline std::string quickstart_recipe() { return std::string(FP8RL_SOURCE_DIR) + "/recipes/quickstart-tiny.yaml"; }

// A tiny random Qwen3 directory (byte tokenizer) under `dir`.
inline std::string tiny_model_dir(const TempDir& dir, uint64_t seed = 1) {
  const std::string out = (dir.path() / "model").string();
  model::write_random_checkpoint(out, "qwen3", *recipe::qwen3_preset("tiny"), seed);
  return out;
}

// The quickstart recipe with `overrides`, its run directory under `dir`.
inline recipe::LoadedRecipe quickstart(const TempDir& dir, std::vector<std::string> overrides) {
  overrides.push_back("trainer.output_dir=" + (dir.path() / "runs").string());
  overrides.push_back("trainer.device=cpu");
  return recipe::load_recipe(quickstart_recipe(), overrides);
}

}  // namespace fp8rl::test
