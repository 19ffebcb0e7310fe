#include "trainer/setup.h"

#include "core/model/random_checkpoint.h"
#include "core/recipe/model_presets.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/strings.h"
#include "trainer/stop_tokens.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;

TaskSetup prepare_task(const recipe::LoadedRecipe& loaded, const fs::path& run_dir) {
  const recipe::Recipe& r = loaded.recipe;
  TaskSetup s;
  s.model_dir = r.model.path;
  if (!r.model.init_preset.empty()) {
    const fs::path dir = run_dir / "init_model";
    if (!fs::exists(dir / "model.safetensors")) {
      log::info(cat("model.init_preset ", r.model.init_preset, ": writing a randomly initialised model to ", dir.string()));
      model::write_random_checkpoint(dir.string(), "qwen3", *recipe::qwen3_preset(r.model.init_preset),
                                     static_cast<uint64_t>(r.trainer.seed));
    }
    s.model_dir = dir.string();
  }
  s.tokenizer_dir = r.model.tokenizer_path.empty() ? s.model_dir : r.model.tokenizer_path;
  s.config = model::read_model_config(s.model_dir);
  s.tokenizer.emplace(hf::Tokenizer::from_file(s.tokenizer_dir));
  s.chat_template = hf::resolve_chat_template(r.model.chat_template, s.tokenizer_dir);
  s.examples = load_examples(r, r.data.train_files, *s.tokenizer, s.chat_template, s.config.shape.vocab_size);
  const bool chat = s.chat_template->format != hf::ChatFormat::raw;
  const StopTokens stop = resolve_stop_tokens(s.model_dir, s.tokenizer_dir, *s.tokenizer, s.chat_template, chat);
  if (stop.ids.empty())
    throw ConfigError(cat(s.model_dir, ": no EOS token in generation_config.json, tokenizer_config.json or the chat template; "
                          "every rollout would run to rollout.max_response_length"));
  s.stop_ids = stop.ids;
  log::info(cat("data: ", s.examples.size(), " prompts; stop tokens from ", stop.source));
  return s;
}

}  // namespace fp8rl::trainer
