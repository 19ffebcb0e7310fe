#include "core/recipe/validate.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/hf/regex.h"
#include "core/util/error.h"
#include "core/recipe/model_presets.h"
#include "core/util/strings.h"

namespace fp8rl::recipe {
namespace {

// Upper bounds for sizes the trainer narrows to 32 bits or allocates by (Rules::in_range).
constexpr int64_t kMaxBatch = int64_t{1} << 20;   // prompts, sequences or samples in one batch
constexpr int64_t kMaxCount = int64_t{1} << 24;   // synthetic prompts
constexpr int64_t kMaxTokens = int64_t{1} << 24;  // prompt or response tokens (generate's bound)

class Rules {
 public:
  explicit Rules(const LoadedRecipe& loaded) : l_(loaded) {}

  // "recipes/x.yaml:12: rollout.n: must be >= 1, got 0"
  template <class... Args>
  [[noreturn]] void fail(const std::string& key, fmt::format_string<Args...> f, Args&&... args) const {
    // A key left at its default is blamed on the recipe file that left it unset (not "default:").
    const std::string where = l_.sources.count(key) || l_.path.empty() ? l_.where(key) : l_.path + ": " + key;
    throw ConfigError(fmt::format("{}: {}", where, fmt::format(f, std::forward<Args>(args)...)));
  }
  void at_least(const std::string& key, int64_t v, int64_t lo) const {
    if (v < lo) fail(key, "must be >= {}, got {}", lo, v);
  }
  // Sizes and counts the trainer narrows to 32 bits or allocates by: an upper bound far above
  // any real run, so that a typo (2^40) is a one-line error, not a wrapped value or a host
  // allocation that grows until the machine runs out of memory.
  void in_range(const std::string& key, int64_t v, int64_t lo, int64_t hi) const {
    if (v < lo || v > hi) fail(key, "must be in [{}, {}], got {}", lo, hi, v);
  }
  void positive(const std::string& key, double v) const {
    if (!(v > 0)) fail(key, "must be > 0, got {}", v);
  }
  void non_negative(const std::string& key, double v) const {
    if (!(v >= 0)) fail(key, "must be >= 0, got {}", v);
  }
  void in_open_closed(const std::string& key, double v, double lo, double hi) const {
    if (!(v > lo && v <= hi)) fail(key, "must be in ({}, {}], got {}", lo, hi, v);
  }
  void file_exists(const std::string& key, const std::string& path) const {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail(key, "no such file or directory '{}'", path);
  }
  void dir_exists(const std::string& key, const std::string& path, const char* what) const {
    file_exists(key, path);
    std::error_code ec;
    if (!std::filesystem::is_directory(path, ec)) fail(key, "'{}' is not a directory ({})", path, what);
  }
  std::string src(const std::string& key) const {
    auto it = l_.sources.find(key);
    return it == l_.sources.end() ? "default" : it->second.describe();
  }

 private:
  const LoadedRecipe& l_;
};

hf::ModelShape model_shape(const Rules& rules, const ModelConfig& m) {
  if (m.path.empty() == m.init_preset.empty())
    rules.fail("model.path", "set exactly one of model.path (an HF checkpoint directory) and model.init_preset ({})",
               join(qwen3_preset_names(), ", "));
  if (!m.tokenizer_path.empty()) {
    rules.dir_exists("model.tokenizer_path", m.tokenizer_path, "a tokenizer directory holding tokenizer.json");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(std::filesystem::path(m.tokenizer_path) / "tokenizer.json", ec))
      rules.fail("model.tokenizer_path", "'{}' holds no tokenizer.json", m.tokenizer_path);
  }
  if (!m.init_preset.empty()) return *qwen3_preset(m.init_preset);  // choices are checked by the loader
  rules.dir_exists("model.path", m.path, "an HF checkpoint directory holding config.json");
  return hf::read_hf_config(m.path);
}

void check_quantization(const Rules& r, const QuantizationConfig& q, const hf::ModelShape& shape) {
  r.at_least("quantization.num_first_layers_in_bf16", q.num_first_layers_in_bf16, 0);
  r.at_least("quantization.num_last_layers_in_bf16", q.num_last_layers_in_bf16, 0);
  // Each is bounded before they are added, so the sum cannot overflow.
  if (q.num_first_layers_in_bf16 > shape.num_hidden_layers)
    r.fail("quantization.num_first_layers_in_bf16", "exceeds the model's {} decoder layers, got {}",
           shape.num_hidden_layers, q.num_first_layers_in_bf16);
  if (q.num_last_layers_in_bf16 > shape.num_hidden_layers)
    r.fail("quantization.num_last_layers_in_bf16", "exceeds the model's {} decoder layers, got {}",
           shape.num_hidden_layers, q.num_last_layers_in_bf16);
  if (q.num_first_layers_in_bf16 + q.num_last_layers_in_bf16 > shape.num_hidden_layers)
    r.fail("quantization.num_last_layers_in_bf16",
           "num_first_layers_in_bf16 ({}) + num_last_layers_in_bf16 ({}) exceed the model's {} decoder layers",
           q.num_first_layers_in_bf16, q.num_last_layers_in_bf16, shape.num_hidden_layers);
  if (q.quant_method == "none") return;  // the BF16 baseline ignores the FP8 knobs it inherits

  // Block scaling is what cuBLASLt's Hopper block modes and HF's FP8 checkpoints
  // (weight_block_size + weight_scale_inv) use; ROLL requires the companion keys to match it.
  if (q.weight_scaling == "block") {
    if (q.weight_block_size.size() != 2)
      r.fail("quantization.weight_block_size", "must be [out, in], got {} values", q.weight_block_size.size());
    if (q.weight_block_size != std::vector<int64_t>{128, 128})
      r.fail("quantization.weight_block_size",
             "only [128, 128] is supported (the tile of cuBLASLt's block-scaled FP8 GEMM), got [{}]",
             fmt::join(q.weight_block_size, ", "));
    if (q.fmt != "e4m3")
      r.fail("quantization.fmt", "block scaling (quantization.weight_block_size, {}) requires fmt: e4m3, got {}",
             r.src("quantization.weight_block_size"), q.fmt);
    if (q.activation_scheme != "dynamic")
      r.fail("quantization.activation_scheme", "block scaling requires activation_scheme: dynamic");
    if (q.activation_scaling != "group")
      r.fail("quantization.activation_scaling",
             "block-scaled weights pair with 1x128 activation groups (activation_scaling: group), got {}",
             q.activation_scaling);
  } else {
    // The FP8 GEMM (quant/fp8_gemm.h) pairs one activation granularity with each weight one:
    // channel weights x per-token activations (cuBLASLt outer-vector scales), tensor x tensor.
    const std::string want = paired_activation_scaling(q.weight_scaling);
    if (q.activation_scaling != want)
      r.fail("quantization.activation_scaling", "weight_scaling: {} pairs with activation_scaling: {}, got {}",
             q.weight_scaling, want, q.activation_scaling);
  }
  if (q.fmt != "e4m3")
    r.fail("quantization.fmt",
           "FP8 GEMMs take E4M3 weights and activations (cuBLASLt has no E5M2 x E5M2 kernel), got {}", q.fmt);
  if (shape.is_moe() && q.weight_scaling != "block")
    r.fail("quantization.weight_scaling",
           "model '{}' is a mixture of experts ({} experts): FP8 for MoE requires weight_scaling: block", shape.model_type,
           shape.num_experts);
}

void check_algorithm(const Rules& r, const AlgorithmConfig& a) {
  if (!(a.clip_ratio_low >= 0 && a.clip_ratio_low < 1))
    r.fail("algorithm.clip_ratio_low", "must be in [0, 1), got {}", a.clip_ratio_low);
  r.non_negative("algorithm.clip_ratio_high", a.clip_ratio_high);
  if (a.clip_ratio_c && !(*a.clip_ratio_c > 1))
    r.fail("algorithm.clip_ratio_c", "the dual-clip bound must be > 1 (or null to turn it off), got {}", *a.clip_ratio_c);
  if (a.clip_ratio_c && *a.clip_ratio_c <= 1 + a.clip_ratio_high)
    r.fail("algorithm.clip_ratio_c", "must exceed 1 + clip_ratio_high = {} or it clips inside the PPO range, got {}",
           1 + a.clip_ratio_high, *a.clip_ratio_c);
  if (a.tis_level != "none") {
    if (!(a.tis_cap > 1))
      r.fail("algorithm.tis_cap", "the truncated-IS cap must be > 1 (a cap <= 1 down-weights every token), got {}",
             a.tis_cap);
    if (a.tis_mode == "mask" && !(a.tis_mask_lower > 0 && a.tis_mask_lower < 1))
      r.fail("algorithm.tis_mask_lower", "must be in (0, 1), got {}", a.tis_mask_lower);
  }
  r.non_negative("algorithm.kl_loss_coef", a.kl_loss_coef);
  r.non_negative("algorithm.entropy_coeff", a.entropy_coeff);
  r.at_least("algorithm.max_num_gen_batches", a.max_num_gen_batches, 1);
}

void check_lora(const Rules& r, const LoraConfig& lora) {
  r.in_range("lora.rank", lora.rank, 0, 65536);
  if (lora.rank == 0) return;
  r.positive("lora.alpha", lora.alpha);
  if (!(lora.alpha <= 1e6)) r.fail("lora.alpha", "must be a finite value <= 1e6, got {}", lora.alpha);
  if (!(lora.dropout >= 0 && lora.dropout < 1)) r.fail("lora.dropout", "must be in [0, 1), got {}", lora.dropout);
  static const std::vector<std::string> kKnown = {"all-linear", "q_proj", "k_proj", "v_proj",
                                                  "o_proj", "gate_proj", "up_proj", "down_proj"};
  if (lora.target_modules.empty()) r.fail("lora.target_modules", "must name at least one module (or all-linear)");
  for (const auto& m : lora.target_modules) {
    if (std::find(kKnown.begin(), kKnown.end(), m) != kKnown.end()) continue;
    auto hint = closest_match(m, kKnown);
    r.fail("lora.target_modules", "'{}' is not one of: {}{}", m, join(kKnown, ", "),
           hint ? fmt::format(" (did you mean '{}'?)", *hint) : std::string());
  }
}

void check_data_and_reward(const Rules& r, const Recipe& rc) {
  const DataConfig& d = rc.data;
  if (d.train_files.empty() == d.synthetic_task.empty())
    r.fail("data.train_files", "set exactly one of data.train_files (JSONL) and data.synthetic_task (copy, addition, countdown)");
  for (const auto& f : d.train_files) r.file_exists("data.train_files", f);
  for (const auto& f : d.val_files) r.file_exists("data.val_files", f);
  r.in_range("data.synthetic_num_prompts", d.synthetic_num_prompts, 1, kMaxCount);
  r.in_range("data.max_prompt_length", d.max_prompt_length, 1, kMaxTokens);
  r.in_range("data.train_batch_size", d.train_batch_size, 1, kMaxBatch);
  if (d.prompt_key.empty()) r.fail("data.prompt_key", "must not be empty");

  const RewardConfig& w = rc.reward;
  if (w.type == "synthetic" && d.synthetic_task.empty())
    r.fail("reward.type", "the synthetic reward scores data.synthetic_task, which is not set");
  if (!d.synthetic_task.empty() && w.type != "synthetic")
    r.fail("reward.type", "data.synthetic_task ({}) is scored by reward.type: synthetic, got {}", d.synthetic_task, w.type);
  if (w.type == "command" && w.command.empty()) r.fail("reward.command", "reward.type: command needs a command to run");
  r.positive("reward.timeout_s", w.timeout_s);
  if (!std::isfinite(w.timeout_s)) r.fail("reward.timeout_s", "must be a finite number of seconds, got {}", w.timeout_s);
  if (w.type == "regex" || w.type == "format") {
    if (w.pattern.empty()) r.fail("reward.pattern", "reward.type: {} needs a pattern", w.type);
    try {
      hf::Regex re(w.pattern, "PCRE2");  // bounded length and nesting (core/hf/regex.h)
    } catch (const ConfigError& e) {
      r.fail("reward.pattern", "{}", e.what());
    }
  }
  r.at_least("reward.overlong_buffer_len", w.overlong_buffer_len, 0);
  if (w.overlong_buffer_len >= rc.rollout.max_response_length)
    r.fail("reward.overlong_buffer_len", "must be smaller than rollout.max_response_length ({}), got {}",
           rc.rollout.max_response_length, w.overlong_buffer_len);
  r.non_negative("reward.overlong_penalty_factor", w.overlong_penalty_factor);
}

void check_rollout(const Rules& r, const RolloutConfig& ro) {
  r.in_range("rollout.n", ro.n, 1, 65536);
  r.non_negative("rollout.temperature", ro.temperature);
  // 1 / temperature multiplies the logits in float32: below ~1e-38 it is inf, and long before
  // that the sampler is greedy in all but name.
  if (!std::isfinite(ro.temperature) || (ro.temperature > 0 && ro.temperature < kMinTemperature))
    r.fail("rollout.temperature", "must be 0 (greedy) or a finite value >= {}, got {}", kMinTemperature, ro.temperature);
  r.in_open_closed("rollout.top_p", ro.top_p, 0, 1);
  if (ro.top_k != -1 && ro.top_k < 1) r.fail("rollout.top_k", "must be -1 (off) or >= 1, got {}", ro.top_k);
  for (const std::string& s : ro.stop)
    if (s.empty()) r.fail("rollout.stop", "an empty stop string would end every sample at once; remove it");
  r.in_range("rollout.max_response_length", ro.max_response_length, 1, kMaxTokens);
  r.in_open_closed("rollout.gpu_memory_utilization", ro.gpu_memory_utilization, 0, 1);
  r.in_range("rollout.max_num_seqs", ro.max_num_seqs, 1, kMaxBatch);
}

void check_trainer(const Rules& r, const Recipe& rc) {
  const TrainerConfig& t = rc.trainer;
  r.in_range("trainer.n_gpus_per_node", t.n_gpus_per_node, 1, 1024);
  r.at_least("trainer.total_training_steps", t.total_training_steps, 1);
  r.positive("trainer.lr", t.lr);
  r.non_negative("trainer.weight_decay", t.weight_decay);
  if (!(t.adam_beta1 >= 0 && t.adam_beta1 < 1)) r.fail("trainer.adam_beta1", "must be in [0, 1), got {}", t.adam_beta1);
  if (!(t.adam_beta2 >= 0 && t.adam_beta2 < 1)) r.fail("trainer.adam_beta2", "must be in [0, 1), got {}", t.adam_beta2);
  r.positive("trainer.adam_eps", t.adam_eps);
  r.at_least("trainer.lr_warmup_steps", t.lr_warmup_steps, 0);
  r.non_negative("trainer.grad_clip", t.grad_clip);
  r.in_range("trainer.ppo_mini_batch_size", t.ppo_mini_batch_size, 1, kMaxBatch);
  r.in_range("trainer.ppo_micro_batch_size_per_gpu", t.ppo_micro_batch_size_per_gpu, 1, kMaxBatch);
  r.at_least("trainer.ppo_epochs", t.ppo_epochs, 1);
  r.at_least("sft.steps", rc.sft.steps, 0);
  r.positive("sft.lr", rc.sft.lr);
  r.in_range("sft.batch_size", rc.sft.batch_size, 1, kMaxBatch);
  if (rc.lora.rank > 0 && rc.lora.dropout > 0 && rc.model.enable_gradient_checkpointing)
    r.fail("lora.dropout", "dropout {} with model.enable_gradient_checkpointing: true would draw a different mask when a layer "
           "is recomputed in backward; set lora.dropout: 0 or model.enable_gradient_checkpointing: false", rc.lora.dropout);
  if (rc.algorithm.use_kl_loss && rc.lora.rank == 0)
    r.fail("algorithm.use_kl_loss", "the KL loss needs LoRA (lora.rank > 0): its reference policy is the base without "
           "adapters; full fine-tuning keeps no second copy of the weights");
  r.at_least("trainer.test_freq", t.test_freq, 0);
  if (rc.data.train_batch_size % t.ppo_mini_batch_size != 0)
    r.fail("trainer.ppo_mini_batch_size", "must divide data.train_batch_size ({}, {}), got {}", rc.data.train_batch_size,
           r.src("data.train_batch_size"), t.ppo_mini_batch_size);
  if (t.output_dir.empty()) r.fail("trainer.output_dir", "must not be empty");
  const bool control = std::any_of(t.experiment_name.begin(), t.experiment_name.end(),
                                   [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f; });
  if (control || t.experiment_name.find('/') != std::string::npos || t.experiment_name == "." ||
      t.experiment_name == "..")
    r.fail("trainer.experiment_name", "must be a plain directory name (no '/', no control characters), got '{}'",
           control ? "<name with control characters>" : t.experiment_name);
  if (t.test_freq > 0 && rc.data.val_files.empty())
    r.fail("trainer.test_freq", "validation every {} steps needs data.val_files", t.test_freq);
}

void check_logging_and_checkpoint(const Rules& r, const Recipe& rc) {
  static const std::vector<std::string> kSinks = {"console", "jsonl", "tensorboard"};
  for (const auto& s : rc.logging.logger)
    if (std::find(kSinks.begin(), kSinks.end(), s) == kSinks.end())
      r.fail("logging.logger", "'{}' is not one of: {}", s, join(kSinks, ", "));
  r.at_least("logging.log_interval", rc.logging.log_interval, 1);
  const CheckpointConfig& c = rc.checkpoint;
  r.at_least("checkpoint.save_freq", c.save_freq, 0);
  r.at_least("checkpoint.max_ckpt_to_keep", c.max_ckpt_to_keep, 0);
  if (c.resume_mode == "resume_path") {
    if (c.resume_from_path.empty())
      r.fail("checkpoint.resume_mode", "resume_path needs the checkpoint directory (checkpoint.resume_from_path)");
    r.dir_exists("checkpoint.resume_from_path", c.resume_from_path, "a checkpoint directory");
  }
}

}  // namespace

hf::ModelShape validate_recipe(const LoadedRecipe& loaded) {
  const Rules rules(loaded);
  const Recipe& rc = loaded.recipe;
  hf::ModelShape shape = model_shape(rules, rc.model);
  check_quantization(rules, rc.quantization, shape);
  check_lora(rules, rc.lora);
  check_rollout(rules, rc.rollout);
  check_algorithm(rules, rc.algorithm);
  check_data_and_reward(rules, rc);
  check_trainer(rules, rc);
  check_logging_and_checkpoint(rules, rc);
  return shape;
}

}  // namespace fp8rl::recipe
