#include "trainer/train.h"

#include <csignal>
#include <ctime>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <thread>

#include <ATen/Parallel.h>

#include "core/model/model_config.h"
#include "core/recipe/run_dir.h"
#include "core/recipe/validate.h"
#include "core/util/atomic_file.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/strings.h"
#include "quant/precision_plan.h"
#include "rollout/engine.h"
#include "trainer/checkpoint_store.h"
#include "trainer/collective.h"
#include "trainer/device_memory.h"
#include "trainer/metrics_log.h"
#include "trainer/optimizer.h"
#include "trainer/policy.h"
#include "trainer/rewards.h"
#include "trainer/rl_step.h"
#include "trainer/run_state.h"
#include "trainer/setup.h"
#include "trainer/sft.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;

namespace {

// Ctrl-C: the first stops after the current step (and saves a checkpoint), the second exits now.
// A second one within kSameInterruptNs of the first is taken as the same Ctrl-C: launchers such as
// `timeout` send the signal to the process and again to its process group, and the copy, handled
// as a second Ctrl-C, lost the run's checkpoint (seen as a flaky Ctrl-C check in CI).
constexpr int64_t kSameInterruptNs = 1'000'000'000;
std::atomic<int64_t> g_first_interrupt_ns{0};  // CLOCK_MONOTONIC of the first; 0: none yet
static_assert(std::atomic<int64_t>::is_always_lock_free, "a signal handler may only touch lock-free atomics");

void on_interrupt(int) {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe
  const int64_t now = std::max<int64_t>(1, static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec);
  int64_t first = 0;
  if (g_first_interrupt_ns.compare_exchange_strong(first, now)) {
    static const char msg[] = "\nfp8rl: interrupted; finishing this step and saving a checkpoint (Ctrl-C again to quit now)\n";
    [[maybe_unused]] const auto n = ::write(2, msg, sizeof msg - 1);
    return;
  }
  if (now - first < kSameInterruptNs) return;
  ::_exit(130);
}

class InterruptHandler {
 public:
  InterruptHandler() {
    g_first_interrupt_ns = 0;
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptHandler() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  bool requested() const { return g_first_interrupt_ns.load() != 0; }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// How long a collective waits for the other ranks: longer than any one phase of a step on a
// healthy rank (rank 0's checkpoint writes included), so only a dead or stuck rank trips it.
constexpr std::chrono::minutes kCollectiveTimeout{30};

// Ranks sharing this node's CPU cores split them, so two CPU ranks do not each start a thread
// per core.
void share_cpu_threads(const WorldEnv& env, const at::Device& device) {
  if (!device.is_cpu()) return;
  at::set_num_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / env.local_world_size));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

void check_local_ranks(const recipe::LoadedRecipe& loaded) {
  recipe::validate_recipe(loaded);
  const int64_t ranks = loaded.recipe.trainer.n_gpus_per_node;
  if (resolve_device(loaded.recipe.trainer.device).is_cuda() && static_cast<int64_t>(at::getNumGPUs()) < ranks)
    throw ConfigError(cat(loaded.where("trainer.n_gpus_per_node"), ": trainer.n_gpus_per_node ", ranks, " but ",
                          at::getNumGPUs(), " GPU(s) are visible (one rank per GPU)"));
}

namespace {

// What RL training needs beyond validate_recipe (which `fp8rl eval` and SFT share): a sampling
// temperature > 0, since the trainer's log-probs are of softmax(logits / T) and the ratio against
// the rollout's needs the same T; at least two samples per prompt (GRPO and Dr. GRPO advantages
// are relative to the prompt's other samples; verl would give a lone sample its raw reward, a
// different algorithm); and room in the model's context for the longest prompt plus
// the longest response, which the engine would otherwise refuse at whichever step first drew
// such a prompt.
void check_rl_recipe(const recipe::LoadedRecipe& loaded, const hf::ModelShape& shape) {
  const recipe::Recipe& r = loaded.recipe;
  if (!(r.rollout.temperature > 0))
    throw ConfigError(cat(loaded.where("rollout.temperature"), ": rollout.temperature must be > 0 for RL training (the ",
                          "trainer's log-probs are of softmax(logits / T)), got ", r.rollout.temperature,
                          "; greedy decoding is `fp8rl generate --temperature 0`"));
  if (r.rollout.n < 2)
    throw ConfigError(cat(loaded.where("rollout.n"), ": rollout.n must be >= 2 for RL training: ",
                          r.algorithm.adv_estimator, "'s advantages compare a prompt's samples with each other, so ",
                          "with one sample every advantage is 0 and nothing is learned, got ", r.rollout.n));
  const int64_t context = r.model.path.empty()
                              ? model::default_model_config(model::Family::qwen3, shape).max_position_embeddings
                              : model::read_model_config(r.model.path).max_position_embeddings;
  const int64_t longest = r.data.max_prompt_length + r.rollout.max_response_length;
  if (context > 0 && longest > context)
    throw ConfigError(cat(loaded.where("rollout.max_response_length"), ": data.max_prompt_length (",
                          r.data.max_prompt_length, ") + rollout.max_response_length (", r.rollout.max_response_length,
                          ") = ", longest, " tokens exceed the model's context of ", context,
                          " (max_position_embeddings); lower one of them"));
  if (r.lora.rank > 0 && r.lora.dropout > 0)
    log::warn(cat(loaded.where("lora.dropout"), ": lora.dropout ", r.lora.dropout, " > 0: the old log-probs are computed "
                  "without dropout and the update with it, so the PPO ratio starts away from 1 (RL recipes use 0)"));
  if (r.rollout.top_p < 1 || r.rollout.top_k > 0)
    log::warn(cat(loaded.where(r.rollout.top_p < 1 ? "rollout.top_p" : "rollout.top_k"), ": rollout.top_p < 1 / top_k ",
                  "truncate what is sampled, but the PPO ratio and TIS use full-vocabulary log-probs (as verl's do), ",
                  "so they ignore the truncation and its renormalisation (RL recipes sample with top_p 1, top_k -1)"));
}

}  // namespace

int run_train(const recipe::LoadedRecipe& loaded) {
  log::set_level(log::parse_level(loaded.recipe.logging.level));
  const hf::ModelShape shape = recipe::validate_recipe(loaded);
  check_rl_recipe(loaded, shape);
  const recipe::Recipe& r = loaded.recipe;
  // The precision plan's own checks (modules_in_bf16 patterns that match nothing, ...) before
  // anything is written or trained; the policy makes it again from the model it loads.
  if (r.quantization.quant_method == "fp8") quant::make_precision_plan(shape, r.quantization, r.model.dtype);

  // Data parallelism: the ranks a launcher started (fp8rl train --gpus N, torchrun, SLURM) join
  // one process group; without a launcher this process is the only rank.
  const std::optional<WorldEnv> world = world_env_from_environment();
  if (world) pin_local_gpu(*world);  // before anything touches CUDA
  const at::Device device = resolve_device(r.trainer.device);
  std::unique_ptr<Collective> comm = world ? std::make_unique<Collective>(*world, device, kCollectiveTimeout)
                                           : std::make_unique<Collective>();
  if (world) share_cpu_threads(*world, device);
  const bool main_rank = comm->is_main();
  if (!main_rank && log::parse_level(r.logging.level) < log::Level::warn) log::set_level(log::Level::warn);

  // One-time setup: rank 0 creates the run directory, the task's files and the warm-up model;
  // the other ranks wait for it, then read what it made.
  if (!comm->wait_for_setup()) {
    log::warn(cat("rank ", comm->rank(), ": rank 0 failed while setting up the run (its message says why); stopping"));
    return kExitPeer;
  }
  fs::path dir;
  std::optional<TaskSetup> task_setup;
  std::optional<fs::path> resume_from;
  CheckpointStore store(recipe::run_dir_path(loaded), r.checkpoint.max_ckpt_to_keep);
  try {
    if (main_rank) {
      dir = recipe::open_run_dir(loaded);
      write_file_atomic(dir / recipe::kResolvedRecipeFile, recipe::to_yaml(loaded, /*annotate=*/true));
      log::add_file_sink((dir / "fp8rl.log").string());
      log::info(cat("run directory ", dir.string()));
    } else {
      dir = recipe::run_dir_path(loaded);
    }
    // Everything the user's files can get wrong, before the weights load.
    task_setup.emplace(prepare_task(loaded, dir));
    // The checkpoint to resume from, checked before the warm-up (minutes of work a bad --resume
    // path would waste).
    if (r.checkpoint.resume_mode == "auto") {
      std::vector<std::string> skipped;
      resume_from = store.latest_good(&skipped);
      for (const std::string& s : skipped) log::warn("resume: skipping " + s);
      if (!resume_from) log::info("resume auto: no complete checkpoint in " + dir.string() + "; starting from step 0");
    } else if (r.checkpoint.resume_mode == "resume_path") {
      resume_from = fs::path(r.checkpoint.resume_from_path);
      verify_checkpoint(*resume_from);  // refuse a damaged one before loading anything
    }
    if (r.sft.steps > 0) {  // the starting skill, made once per run (a resumed run reuses it)
      const fs::path warm = dir / "sft_model";
      if (main_rank && !fs::exists(warm / "model.safetensors")) supervised_warmup(r, *task_setup, device, warm);
      task_setup->model_dir = warm.string();
      log::info("starting from the supervised warm-up " + warm.string());
    }
  } catch (...) {
    comm->announce_setup(false);
    throw;
  }
  comm->announce_setup(true);
  TaskSetup& task = *task_setup;

  const auto t_load = std::chrono::steady_clock::now();
  Policy policy(r, task.model_dir, device);
  log::info(cat("model ", task.model_dir, " (", shape.num_hidden_layers, " layers, hidden ", shape.hidden_size, ") on ",
                device.str(), " in ", seconds_since(t_load), " s; ",
                r.quantization.quant_method == "fp8" ? policy.plan().summary() : std::string("dense (quant_method: none)")));
  std::vector<model::ModelTensor> params = policy.trainable();
  int64_t trainable_params = 0;
  for (const model::ModelTensor& t : params) trainable_params += t.tensor.numel();
  log::info(cat(policy.lora() ? "LoRA" : "full fine-tuning", ": ", params.size(), " trainable tensors, ", trainable_params,
                " parameters"));
  AdamW optimizer(std::move(params), adamw_options(r.trainer, r.trainer.lr));
  DataOrder order(static_cast<int64_t>(task.examples.size()), static_cast<uint64_t>(r.data.seed), r.data.shuffle);
  int64_t start = 0;
  if (resume_from) {
    start = load_run_checkpoint(*resume_from, policy, optimizer, order);
    log::info(cat("resumed from ", resume_from->string(), " at step ", start, " (data epoch ", order.epoch(), ", position ",
                  order.cursor(), ")"));
    // Later checkpoints of this run directory are a branch the resume abandons (checkpoint_store.h).
    if (main_rank)
      if (const fs::path aside = store.set_aside_after(start); !aside.empty())
        log::warn(cat("resume: this run's checkpoints after step ", start, " belong to the branch it left; moved to ",
                      aside.string()));
  }
  std::optional<MetricsLog> metrics_log;  // rank 0 writes the run's files
  if (main_rank && resume_from) {
    // Resumed from another run's checkpoint (resume_path into a new run directory): its steps so
    // far come from the checkpoint's copy of metrics.jsonl, so this run's curves start at step 1.
    const fs::path mine = dir / recipe::kMetricsFile, theirs = *resume_from / recipe::kMetricsFile;
    std::error_code ec;
    if ((!fs::exists(mine) || fs::file_size(mine, ec) == 0) && fs::exists(theirs))
      fs::copy_file(theirs, mine, fs::copy_options::overwrite_existing);
  }
  if (main_rank) metrics_log.emplace(dir, r.logging.logger, resume_from ? start : -1);
  const BatchReward reward = make_batch_reward(r);
  rollout::Engine engine(policy.model(), engine_config(r.rollout, *task.tokenizer));
  std::vector<Example> val_examples;
  if (r.trainer.test_freq > 0)
    val_examples = load_examples(r, r.data.val_files, *task.tokenizer, task.chat_template, task.config.shape.vocab_size);
  const StepInputs in{r, task.examples, *task.tokenizer, task.stop_ids, 0, comm.get()};

  if (r.trainer.test_freq > 0 && start == 0) {  // the starting point, logged as step 0 (verl's val_before_train)
    const Metrics vm = validate(policy, engine, val_examples, reward, in);
    if (metrics_log) metrics_log->log(0, std::vector<std::pair<std::string, double>>(vm.begin(), vm.end()));
    log::info(cat("validation before training: accuracy ", vm.at("val/accuracy"), " on ", val_examples.size(), " prompts"));
  }
  InterruptHandler interrupts;
  const auto t_run = std::chrono::steady_clock::now();
  int64_t step = start;
  while (step < r.trainer.total_training_steps) {
    const auto t_step = std::chrono::steady_clock::now();
    StepInputs si = in;
    si.step = step;
    Metrics m;
    reset_peak_memory(device);
    RolloutBatch batch = collect_rollouts(policy, engine, order, reward, si);
    m.insert(batch.metrics.begin(), batch.metrics.end());
    m["memory/rollout_peak_gib"] = peak_memory_gib(device);
    if (batch.samples.empty()) {
      log::warn(cat("step ", step + 1, ": every group was filtered out (all scores equal within each group); no update"));
    } else {
      reset_peak_memory(device);
      const auto t_old = std::chrono::steady_clock::now();
      const SampleTensors old = sample_logprobs(policy, batch.samples, si);
      const at::Tensor roll = rollout_logprobs(batch.samples, old.logp.size(1), device);
      at::Tensor ref;
      if (r.algorithm.use_kl_loss) {
        Policy::ReferenceScope reference(policy);
        ref = sample_logprobs(policy, batch.samples, si).logp;
      }
      m["timing_s/old_log_prob"] = seconds_since(t_old);
      m["memory/old_log_prob_peak_gib"] = peak_memory_gib(device);
      reset_peak_memory(device);
      const Metrics mm = mismatch_metrics(old.logp, roll, old.mask, r.algorithm);
      m.insert(mm.begin(), mm.end());
      const auto t_update = std::chrono::steady_clock::now();
      const Metrics um = ppo_update(policy, optimizer, batch, old,
                                    r.algorithm.tis_level == "none" ? at::Tensor() : roll, ref, si);
      m.insert(um.begin(), um.end());
      m["timing_s/update"] = seconds_since(t_update);
      m["memory/update_peak_gib"] = peak_memory_gib(device);
    }
    if (const double reserved = reserved_memory_gib(device); reserved >= 0) m["memory/reserved_gib"] = reserved;
    ++step;
    m["data/epoch"] = static_cast<double>(order.epoch());
    if (r.trainer.test_freq > 0 && (step % r.trainer.test_freq == 0 || step == r.trainer.total_training_steps)) {
      const auto t_val = std::chrono::steady_clock::now();
      const Metrics vm = validate(policy, engine, val_examples, reward, si);
      m.insert(vm.begin(), vm.end());
      m["timing_s/validation"] = seconds_since(t_val);
    }
    // Every rank stops after the same step, whichever of them the signal reached first.
    const bool interrupted = comm->all_reduce_max(interrupts.requested() ? 1.0 : 0.0) > 0;
    const bool last = step == r.trainer.total_training_steps || interrupted;
    m["timing_s/step"] = seconds_since(t_step);
    // Metrics first, then the checkpoint (which copies metrics.jsonl): a checkpoint of step s
    // always holds the line of step s.
    if (metrics_log) metrics_log->log(step, std::vector<std::pair<std::string, double>>(m.begin(), m.end()));
    if (main_rank && ((r.checkpoint.save_freq > 0 && step % r.checkpoint.save_freq == 0) || last)) {
      const auto t_ckpt = std::chrono::steady_clock::now();
      const fs::path saved = save_run_checkpoint(store, step, policy, optimizer, order, dir);
      log::info(cat("checkpoint ", saved.string(), " (", seconds_since(t_ckpt), " s)"));
    }
    if ((step - start) % r.logging.log_interval == 0 || last) {
      Progress p;
      p.step = step;
      p.total_steps = r.trainer.total_training_steps;
      p.reward = m["reward/mean"];
      p.accuracy = m["score/accuracy"];
      p.response_length = m["response_length/mean"];
      p.tokens_per_s = m["perf/rollout_tokens_per_s"];
      p.seconds_per_step = seconds_since(t_run) / static_cast<double>(step - start);
      log::info(progress_line(p));
    }
    if (interrupted) {
      log::warn(cat("stopped by a signal after step ", step, "; continue with --resume auto"));
      return 130;
    }
  }
  log::info(cat("finished ", r.trainer.total_training_steps, " steps in ", seconds_since(t_run), " s; run directory ",
                dir.string()));
  return 0;
}

}  // namespace fp8rl::trainer
