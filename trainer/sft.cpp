#include "trainer/sft.h"

#include <ATen/core/grad_mode.h>

#include <chrono>

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
#include "trainer/rewards.h"
#include "trainer/setup.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;

namespace {

// Greedy accuracy of the model on (at most) the first `limit` examples, scored by the recipe's
// reward function (1 = correct).
double greedy_accuracy(const model::CausalLM& model, const TaskSetup& task, const recipe::Recipe& r, size_t limit) {
  rollout::EngineConfig ec;
  ec.gpu_memory_utilization = r.rollout.gpu_memory_utilization;
  rollout::Engine engine(model, ec);
  std::vector<rollout::GenerateRequest> requests;
  const size_t n = std::min(limit, task.examples.size());
  for (size_t i = 0; i < n; ++i) {
    rollout::GenerateRequest q;
    q.prompt = task.examples[i].prompt_ids;
    q.params.max_new_tokens = static_cast<int32_t>(r.rollout.max_response_length);
    q.params.stop_token_ids = task.stop_ids;
    q.sampling.temperature = 0;
    requests.push_back(std::move(q));
  }
  at::NoGradGuard no_grad;
  const std::vector<rollout::GenerateOutput> outs = engine.generate(requests);
  const RewardFunction reward = make_reward_function(r.reward, r.data.synthetic_task);
  double correct = 0;
  for (size_t i = 0; i < n; ++i) {
    const rollout::SampleOutput& s = outs[i].output.samples.at(0);
    std::vector<int32_t> ids(s.tokens.begin(), s.tokens.end());
    if (s.finish_reason == rollout::FinishReason::kStop && !ids.empty()) ids.pop_back();
    const std::string text = task.tokenizer->decode(ids);
    correct += reward({task.examples[i].prompt, text, task.examples[i].answer}) >= 1.0 ? 1 : 0;
  }
  return correct / static_cast<double>(std::max<size_t>(1, n));
}

}  // namespace

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
  int64_t loss_count = 0;
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
    optimizer.clip_grad_norm(r.trainer.grad_clip);
    optimizer.step(scheduled_lr(r.sft.lr, step, r.trainer.lr_warmup_steps, r.sft.steps, r.trainer.lr_scheduler));
    loss_sum += loss.item<double>();
    ++loss_count;
    if ((step + 1) % 50 == 0 || step + 1 == r.sft.steps) {
      log::info(cat("sft step ", step + 1, "/", r.sft.steps, ": loss ", loss_sum / static_cast<double>(loss_count), " (",
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s)"));
      loss_sum = 0;
      loss_count = 0;
    }
  }
  const double acc = greedy_accuracy(policy.model(), task, r, 256);
  log::info(cat("sft: greedy accuracy on the first ", std::min<size_t>(256, task.examples.size()), " prompts: ", acc));
  save_dense_model(policy.model(), task.model_dir, out.string());
  log::info("sft: wrote " + out.string());
}

}  // namespace fp8rl::trainer
