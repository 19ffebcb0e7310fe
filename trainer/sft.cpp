#include "trainer/sft.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "core/model/tensor_visitor.h"
#include "core/recipe/run_dir.h"
#include "core/recipe/validate.h"
#include "core/util/atomic_file.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/strings.h"
#include "rollout/engine.h"
#include "trainer/export.h"
#include "trainer/optimizer.h"
#include "trainer/policy.h"
#include "trainer/rl_step.h"
#include "trainer/setup.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;

int run_sft(const recipe::LoadedRecipe& loaded) {
  log::set_level(log::parse_level(loaded.recipe.logging.level));
  recipe::validate_recipe(loaded);
  if (loaded.recipe.sft.steps == 0)
    throw ConfigError("sft.steps: 0 steps of supervised warm-up; set sft.steps (e.g. sft.steps=300)");
  const fs::path dir = recipe::open_run_dir(loaded);
  write_file_atomic(dir / recipe::kResolvedRecipeFile, recipe::to_yaml(loaded, /*annotate=*/true));
  log::add_file_sink((dir / "fp8rl.log").string());
  const TaskSetup task = prepare_task(loaded, dir);
  supervised_warmup(loaded.recipe, task, resolve_device(loaded.recipe.trainer.device), dir / "model");
  return 0;
}

void supervised_warmup(const recipe::Recipe& recipe, const TaskSetup& task, at::Device device, const fs::path& out) {
  recipe::Recipe r = recipe;
  if (r.reward.type == "command")
    throw ConfigError("reward.type: command: the warm-up measures its accuracy with a built-in reward; use a built-in one");
  r.quantization.quant_method = "none";  // the warm-up trains a dense model; RL quantizes it at load
  r.lora.rank = 0;
  for (const Example& e : task.examples)
    if (e.answer.empty()) throw ConfigError(e.where + ": no reference answer (reward.answer_key) to fine-tune on");
  Policy policy(r, task.model_dir, device);
  AdamW optimizer(policy.trainable(), adamw_options(r.trainer, r.sft.lr));
  // Its own order (seeded apart from the RL run's), so the warm-up does not move the RL data order.
  DataOrder order(static_cast<int64_t>(task.examples.size()), mix_seed(static_cast<uint64_t>(r.data.seed), 0x5f7),
                  r.data.shuffle);
  // The answer as the model should produce it: its tokens, then the first stop token.
  std::vector<std::vector<int64_t>> targets;
  for (const Example& e : task.examples) {
    std::vector<int32_t> ids = task.tokenizer->encode(e.answer);
    std::vector<int64_t> t(ids.begin(), ids.end());
    t.push_back(task.stop_ids.front());
    targets.push_back(std::move(t));
  }
  log::info(cat("sft: ", task.examples.size(), " examples, ", r.sft.steps, " steps of ", r.sft.batch_size, " at lr ", r.sft.lr));
  const auto t0 = std::chrono::steady_clock::now();
  double loss_sum = 0;
  int64_t loss_count = 0, skipped = 0;
  for (int64_t step = 0; step < r.sft.steps; ++step) {
    SequenceBatch batch;
    for (const int64_t i : order.next(r.sft.batch_size)) {
      const Example& e = task.examples[static_cast<size_t>(i)];
      batch.prompts.emplace_back(e.prompt_ids.begin(), e.prompt_ids.end());
      batch.responses.push_back(targets[static_cast<size_t>(i)]);
    }
    const ResponseLogprobs lp = policy.response_logprobs(batch, 1.0);
    const at::Tensor loss = -(lp.logp * lp.mask).sum() / lp.mask.sum();
    loss.backward();
    // As the RL update: a non-finite gradient norm skips the step (clipping cannot bound it, and
    // one NaN step would poison the warm-up model every later start of the run reuses).
    if (std::isfinite(optimizer.clip_grad_norm(r.trainer.grad_clip))) {
      optimizer.step(scheduled_lr(r.sft.lr, step, r.trainer.lr_warmup_steps, r.sft.steps, r.trainer.lr_scheduler));
    } else {
      optimizer.zero_grad();
      ++skipped;
    }
    loss_sum += loss.item<double>();
    ++loss_count;
    if ((step + 1) % 50 == 0 || step + 1 == r.sft.steps) {
      log::info(cat("sft step ", step + 1, "/", r.sft.steps, ": loss ", loss_sum / static_cast<double>(loss_count), " (",
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s)",
                    skipped > 0 ? cat(", ", skipped, " steps skipped for a non-finite gradient") : std::string()));
      loss_sum = 0;
      loss_count = 0;
    }
  }
  // The starting skill RL will see: greedy pass@1 on the first 256 prompts, as validation measures it.
  const std::vector<Example> head(task.examples.begin(),
                                  task.examples.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(256, task.examples.size())));
  rollout::Engine engine(policy.model(), engine_config(r.rollout, *task.tokenizer));
  const Metrics vm = validate(policy, engine, head, make_batch_reward(r), StepInputs{r, head, *task.tokenizer, task.stop_ids, 0});
  log::info(cat("sft: greedy accuracy on the first ", head.size(), " prompts: ", vm.at("val/accuracy")));
  std::vector<std::string> bad;
  policy.model().visit([&](const model::ModelTensor& t) {
    if (t.role == model::TensorRole::trainable && !at::isfinite(t.tensor).all().item<bool>()) bad.push_back(t.name);
  });
  if (!bad.empty())
    throw RuntimeFailure(cat("sft: the warm-up model holds NaN or inf (", bad.front(), bad.size() > 1 ? cat(" and ", bad.size() - 1, " more") : std::string(),
                             "); not saving it: lower sft.lr"));
  save_dense_model(policy.model(), task.model_dir, out.string());
  log::info("sft: wrote " + out.string());
}

}  // namespace fp8rl::trainer
