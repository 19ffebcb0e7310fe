// What `fp8rl train` and `fp8rl sft` both need before any weight loads: the model directory (a
// randomly initialised one written into the run directory for model.init_preset), its
// tokenizer and chat template, the tokenized examples and the stop tokens. Everything a user's
// files can get wrong fails here, naming the file and line, before minutes of loading.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/hf/chat_template.h"
#include "core/hf/tokenizer.h"
#include "core/model/model_config.h"
#include "core/recipe/load.h"
#include "trainer/data.h"

namespace fp8rl::trainer {

struct TaskSetup {
  std::string model_dir, tokenizer_dir;
  model::ModelConfig config;
  std::optional<hf::Tokenizer> tokenizer;
  std::optional<hf::ChatTemplate> chat_template;
  std::vector<Example> examples;
  std::vector<int32_t> stop_ids;
};

// model.init_preset writes <run_dir>/init_model (Qwen3 layout, byte tokenizer, seeded with
// trainer.seed) once and reuses it on resume.
TaskSetup prepare_task(const recipe::LoadedRecipe& loaded, const std::filesystem::path& run_dir);

}  // namespace fp8rl::trainer
