// The run directory a recipe names (trainer.output_dir / trainer.experiment_name).
//
// Finished work is never overwritten by accident: a directory that already holds a run is
// reopened only when the recipe asks to resume (checkpoint.resume_mode != disable).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "core/recipe/load.h"

namespace fp8rl::recipe {

// Written (atomically, replacing an older one) into the run directory at every start.
inline constexpr const char* kResolvedRecipeFile = "resolved_recipe.yaml";
// Finished work in a run directory: a new run refuses to start on top of these.
inline constexpr const char* kCheckpointsDir = "checkpoints";
inline constexpr const char* kMetricsFile = "metrics.jsonl";

// The run directory this recipe writes to: output_dir/experiment_name, where an empty
// experiment_name is the recipe file's stem.
std::filesystem::path run_dir_path(const LoadedRecipe& loaded);

// Creates the run directory, or reopens it when resuming. Throws ConfigError if it already
// holds finished work (checkpoints, metrics) and resume_mode is disable, RuntimeFailure if it cannot be created.
std::filesystem::path open_run_dir(const LoadedRecipe& loaded);

}  // namespace fp8rl::recipe
