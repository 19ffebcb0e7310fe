// Range and cross-field rules of a recipe, checked once at load (`fp8rl check`, `fp8rl train`).
//
// Every rule throws ConfigError naming where the offending value was set
// ("recipes/x.yaml:14: algorithm.tis_cap: the truncated-IS cap must be > 1 ..."). Rules that
// depend on the model (BF16 layer ranges, MoE needs block scaling) read its config.json, or
// the preset's shape, before any weight is loaded.
#pragma once

#include "core/hf/config.h"
#include "core/recipe/load.h"

namespace fp8rl::recipe {

// The smallest sampling temperature above 0 (greedy): below it sampling is greedy in all but name,
// and far below, 1 / temperature overflows float32. `rollout.temperature` and generate's
// --temperature are 0 or at least this.
inline constexpr double kMinTemperature = 1e-4;

// Returns the model's shape, read on the way.
hf::ModelShape validate_recipe(const LoadedRecipe& loaded);

}  // namespace fp8rl::recipe
