#include "trainer/evaluate.h"

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/recipe/validate.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "rollout/engine.h"
#include "trainer/export.h"
#include "trainer/policy.h"
#include "trainer/rl_step.h"
#include "trainer/setup.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;

namespace {

// A private directory under the system's temporary directory, removed with its contents.
class ScratchDir {
 public:
  ScratchDir() {
    std::string templ = (fs::temp_directory_path() / "fp8rl-eval-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw RuntimeFailure("eval: cannot create a temporary directory in " + fs::temp_directory_path().string());
    path_ = templ;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

}  // namespace

std::string EvalResult::to_json() const {
  nlohmann::json j = {{"checkpoint", checkpoint}, {"step", step},       {"quant_method", quant_method},
                      {"dtype", dtype},           {"prompts", prompts}, {"val/accuracy", accuracy},
                      {"val/response_length", response_length}};
  return j.dump();
}

EvalResult evaluate_checkpoint(const std::string& source, const std::vector<std::string>& overrides) {
  ScratchDir scratch;
  const fs::path model_dir = scratch.path() / "model";
  const fs::path ckpt = export_run(source, model_dir.string());  // verifies it first; a full export in $TMPDIR

  // The checkpoint's recipe, the evaluator's defaults, the user's overrides, and what the
  // evaluator fixes: the exported model, dense load, no adapters, no warm-up, and none of the
  // training-only settings validate_recipe cross-checks against those (the KL loss needs LoRA; a
  // resume_path run's source checkpoint may be gone).
  std::vector<std::string> o = {"quantization.quant_method=none"};
  o.insert(o.end(), overrides.begin(), overrides.end());
  for (const char* fixed : {"model.init_preset=", "lora.rank=0", "sft.steps=0", "algorithm.use_kl_loss=false",
                            "checkpoint.resume_mode=disable", "checkpoint.resume_from_path="})
    o.push_back(fixed);
  o.push_back("model.path=" + model_dir.string());  // model.tokenizer_path stays the run's (the export copies the model dir's)
  recipe::LoadedRecipe loaded = recipe::load_recipe((ckpt / "resolved_recipe.yaml").string(), o);
  if (loaded.recipe.data.val_files.empty())
    throw ConfigError(cat("eval: ", ckpt.string(), ": the run has no data.val_files; give the prompts to score, e.g. "
                          "data.val_files=[val.jsonl]"));
  // Only the validation prompts are read: the run's training files may be gone by now.
  if (loaded.recipe.data.synthetic_task.empty()) loaded.recipe.data.train_files = loaded.recipe.data.val_files;
  recipe::validate_recipe(loaded);
  const recipe::Recipe& r = loaded.recipe;

  const TaskSetup task = prepare_task(loaded, scratch.path());
  const at::Device device = resolve_device(r.trainer.device);
  Policy policy(r, task.model_dir, device);
  rollout::Engine engine(policy.model(), engine_config(r.rollout, *task.tokenizer));
  const std::vector<Example> val =
      load_examples(r, r.data.val_files, *task.tokenizer, task.chat_template, task.config.shape.vocab_size);
  if (val.empty()) throw ConfigError(cat("eval: data.val_files: no prompts to score"));
  const Metrics m = validate(policy, engine, val, make_batch_reward(r), StepInputs{r, val, *task.tokenizer, task.stop_ids, 0});

  EvalResult res;
  res.checkpoint = ckpt.string();
  const std::string name = ckpt.filename().string();  // step_XXXXXXXX
  res.step = name.rfind("step_", 0) == 0 ? std::strtoll(name.c_str() + 5, nullptr, 10) : 0;
  res.quant_method = r.quantization.quant_method;
  res.dtype = r.model.dtype;
  res.prompts = static_cast<int64_t>(val.size());
  res.accuracy = m.at("val/accuracy");
  res.response_length = m.at("val/response_length");
  log::info(cat("eval: ", res.checkpoint, ": accuracy ", res.accuracy, " on ", res.prompts, " prompts (greedy; ",
                res.quant_method == "none" ? "dense " + res.dtype : res.quant_method, " on ", device.str(), ")"));
  return res;
}

}  // namespace fp8rl::trainer
