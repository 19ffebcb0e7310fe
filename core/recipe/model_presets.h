// Qwen3 shapes by name, for randomly initialised models (quickstart, tests, benchmarks).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/hf/config.h"

namespace fp8rl::recipe {

// "tiny" (a few hundred K parameters, CPU-friendly), "76m" (a small GPU experiment model, byte
// tokenizer) and the released Qwen3 dense sizes:
// "0.6b", "1.7b", "4b", "8b", "14b", "32b" (shapes from their config.json files).
std::optional<hf::ModelShape> qwen3_preset(const std::string& name);
std::vector<std::string> qwen3_preset_names();

}  // namespace fp8rl::recipe
