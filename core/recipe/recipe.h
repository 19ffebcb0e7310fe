// The recipe schema: one struct per section, every field with its default and a comment.
//
// Knob names follow what users of verl, NeMo-RL, ROLL and TRL already know (quantization
// knobs from ROLL/verl's FP8 configs, loss knobs from verl's actor config, rollout knobs from
// vLLM). The YAML layout is exactly two levels: `section.key: value`, so every knob has one
// dotted name, used in recipes, overrides (`trainer.lr=1e-6`), error messages and the docs.
//
// Each section lists its fields once, in visit(); the loader, the YAML printer and
// `fp8rl check --keys` all walk that list, so a new knob is one line here plus its rules in
// core/recipe/validate.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fp8rl::recipe {

// Walks the fields of a section. `choices` lists the allowed values of an enumerated string.
class FieldVisitor {
 public:
  virtual ~FieldVisitor() = default;
  virtual void field(const char* key, bool& value, const char* doc) = 0;
  virtual void field(const char* key, int64_t& value, const char* doc) = 0;
  virtual void field(const char* key, double& value, const char* doc) = 0;
  virtual void field(const char* key, std::optional<double>& value, const char* doc) = 0;
  virtual void field(const char* key, std::string& value, const char* doc) = 0;
  virtual void field(const char* key, std::vector<int64_t>& value, const char* doc) = 0;
  virtual void field(const char* key, std::vector<std::string>& value, const char* doc) = 0;
  virtual void choice(const char* key, std::string& value, const std::vector<std::string>& choices,
                      const char* doc) = 0;
};

struct ModelConfig {
  std::string path;                   // HF checkpoint directory (config.json, *.safetensors, tokenizer.json)
  std::string init_preset;            // instead of path: a randomly initialised model of this preset (tiny, 76m, 0.6b, ...)
  std::string tokenizer_path;         // tokenizer directory; empty = model.path
  std::string chat_template = "auto"; // auto (from tokenizer_config.json) | chatml | llama3 | raw
  std::string dtype = "bfloat16";     // compute/master dtype of the non-FP8 parts
  bool enable_gradient_checkpointing = true;  // recompute decoder layers in backward (verl's name)
  void visit(FieldVisitor& v);
};

struct QuantizationConfig {
  std::string quant_method = "fp8";      // fp8 | none (none = the BF16 baseline of the same recipe)
  std::string fmt = "e4m3";              // FP8 format of weights and activations: e4m3 | e5m2
  std::string weight_scaling = "block";  // block (weight_block_size tiles) | channel | tensor
  std::vector<int64_t> weight_block_size{128, 128};  // [out, in] tile of one FP32 weight scale
  std::string activation_scheme = "dynamic";  // scales computed per step from the data (static is not supported)
  std::string activation_scaling = "group";   // group (1 x 128 along K) | token | tensor
  bool use_weight_pow2_scale = false;      // round weight scales up to powers of two
  bool use_activation_pow2_scale = false;  // round activation scales up to powers of two
  int64_t num_first_layers_in_bf16 = 0;    // keep the first N decoder layers in BF16
  int64_t num_last_layers_in_bf16 = 0;     // keep the last N decoder layers in BF16
  std::vector<std::string> modules_in_bf16;  // extra module-name patterns (glob, e.g. "*.mlp.down_proj") kept in BF16
  void visit(FieldVisitor& v);
};

// The activation_scaling the FP8 GEMM pairs with a weight_scaling (quant/fp8_gemm.h): block ->
// group (1x128), channel -> token, tensor -> tensor.
std::string paired_activation_scaling(const std::string& weight_scaling);

struct LoraConfig {
  int64_t rank = 0;       // 0 = full fine-tuning (weights re-quantized in place after each update)
  double alpha = 16.0;    // scaling = alpha / rank
  double dropout = 0.0;   // dropout on the adapter input
  std::vector<std::string> target_modules{"all-linear"};  // all-linear or projection names (q_proj, ...)
  void visit(FieldVisitor& v);
};

struct RolloutConfig {
  int64_t n = 8;                       // samples per prompt (the GRPO group size)
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = -1;                  // -1 = off
  int64_t max_response_length = 1024;  // generated tokens per sample
  std::vector<std::string> stop;       // stop strings: a sample ends once its text holds one (cut from the text rewards see)
  double gpu_memory_utilization = 0.6; // fraction of GPU memory the KV pool may fill up to while rolling out
  int64_t max_num_seqs = 256;          // sequences decoded together
  std::string kv_cache_dtype = "auto"; // auto (model dtype) | fp8
  bool enable_prefix_caching = true;   // compute a prompt's KV once for its n samples
  bool enforce_eager = false;          // true = no CUDA graphs for decode
  bool async_scheduling = false;       // true = schedule and launch step t+1 before reading step t's tokens
  std::string shared_prefix_decode = "auto";  // a prompt's samples read its shared KV blocks together in decode steps
  bool split_mixed_steps = true;       // true = a mixed step's one-token rows run the decode kernel
  bool keep_decode_graphs = true;      // true = decode CUDA graphs captured once, kept across rollouts
  void visit(FieldVisitor& v);
};

struct AlgorithmConfig {
  std::string adv_estimator = "grpo";  // grpo: (r - mean_g) / (std_g + eps) | dr_grpo: r - mean_g
  bool norm_adv_by_batch = false;      // also normalise advantages over the whole batch
  double clip_ratio_low = 0.2;         // PPO clip: ratio >= 1 - clip_ratio_low
  double clip_ratio_high = 0.2;        // PPO clip: ratio <= 1 + clip_ratio_high (DAPO clip-higher: 0.28)
  std::optional<double> clip_ratio_c = 3.0;  // dual clip for negative advantages (> 1; verl's default 3); null = off
  std::string loss_agg_mode = "token-mean";  // token-mean | seq-mean-token-sum | seq-mean-token-mean | seq-mean-token-sum-norm
  std::string tis_level = "token";     // rollout correction: token | sequence | geometric (mean log-ratio per sequence; + mask = NeMo-RL's seq-mask-tis) | none
  std::string tis_mode = "truncate";   // truncate: weight min(ratio, tis_cap) | mask: drop outside [tis_mask_lower, tis_cap]
  double tis_cap = 2.0;                // C in min(exp(old_logp - rollout_logp), C); must be > 1
  double tis_mask_lower = 0.5;         // lower bound of the kept ratio in mask mode
  bool use_kl_loss = false;            // KL penalty to the reference policy (LoRA: base without adapters)
  double kl_loss_coef = 0.001;
  std::string kl_loss_type = "k3";     // k1 | k2 (mse) | k3 (low_var_kl)
  double entropy_coeff = 0.0;          // entropy bonus in the loss (0 = metric only)
  bool filter_groups = false;          // DAPO dynamic sampling: drop groups whose scores are all equal
  int64_t max_num_gen_batches = 4;     // with filter_groups: rollout batches tried per step before giving up
  void visit(FieldVisitor& v);
};

struct DataConfig {
  std::vector<std::string> train_files;  // JSONL files, one prompt per line (relative to the working directory)
  std::vector<std::string> val_files;    // JSONL files evaluated every trainer.test_freq steps
  std::string prompt_key = "prompt";     // field holding the prompt text; a `messages` list is used if present
  std::string synthetic_task;            // instead of files: a built-in task (copy | addition | countdown), no downloads
  int64_t synthetic_num_prompts = 256;   // prompts the synthetic task generates
  int64_t max_prompt_length = 512;       // prompt tokens after the chat template
  std::string truncation = "error";      // longer prompts: error | left | right
  bool skip_malformed = false;           // malformed JSONL lines: false = stop at file:line; true = skip, counted in a warning
  int64_t train_batch_size = 32;         // prompts per step (each gives rollout.n samples)
  bool shuffle = true;
  int64_t seed = 1;                      // data order
  void visit(FieldVisitor& v);
};

struct RewardConfig {
  std::string type = "math";            // math | exact_match | regex | format | synthetic | command
  std::string answer_key = "answer";    // JSONL field with the reference answer
  std::string pattern;                  // regex / format: a PCRE2 regex the response must match (core/hf/regex.h)
  std::string command;                  // command: executable speaking JSONL on stdin/stdout
  double timeout_s = 60;                // command: seconds it may take to answer one batch
  int64_t overlong_buffer_len = 0;      // DAPO overlong shaping: linear penalty over the last N tokens before max_response_length (0 = off)
  double overlong_penalty_factor = 1.0; // penalty at max_response_length
  void visit(FieldVisitor& v);
};

struct TrainerConfig {
  std::string device = "auto";          // auto (cuda if present) | cuda | cpu
  int64_t n_gpus_per_node = 1;
  int64_t total_training_steps = 100;
  double lr = 1e-6;
  double weight_decay = 0.01;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  int64_t lr_warmup_steps = 0;            // RL steps (verl's unit; the SFT warm-up: its own steps)
  std::string lr_scheduler = "constant";  // constant | cosine, over trainer.total_training_steps
  double grad_clip = 1.0;                 // max global grad norm; 0 = off
  int64_t ppo_mini_batch_size = 32;       // prompts per optimizer step (divides data.train_batch_size)
  int64_t ppo_micro_batch_size_per_gpu = 4;  // samples per forward/backward (gradient accumulation)
  int64_t ppo_epochs = 1;
  std::string forward_precision = "bf16";  // full fine-tuning of an FP8 model: the trainer's GEMMs in bf16 (from FP32 masters) | fp8 (the shared FP8 copy)
  int64_t seed = 42;                      // sampling and initialisation
  int64_t test_freq = 0;                  // validate every N steps (0 = never)
  std::string output_dir = "runs";        // runs are written to output_dir/experiment_name
  std::string experiment_name;            // empty = the recipe file's stem
  void visit(FieldVisitor& v);
};

// Supervised warm-up: gives a small model its starting skill on the data's reference answers
// before RL. `fp8rl sft` writes it to <run dir>/model; `fp8rl train` with steps > 0 runs it first
// (into <run dir>/sft_model, once per run) and starts RL from it.
struct SftConfig {
  int64_t steps = 0;        // optimizer steps (0 = no warm-up)
  double lr = 1e-3;         // AdamW learning rate (trainer.weight_decay, betas, grad_clip apply)
  int64_t batch_size = 64;  // examples per step
  void visit(FieldVisitor& v);
};

struct LoggingConfig {
  std::vector<std::string> logger{"console", "jsonl"};  // console | jsonl | tensorboard
  std::string level = "info";                            // debug | info | warn | error
  int64_t log_interval = 1;                              // steps between console lines
  void visit(FieldVisitor& v);
};

struct CheckpointConfig {
  int64_t save_freq = 0;               // save every N steps (0 = only at the end)
  int64_t max_ckpt_to_keep = 2;        // oldest are deleted after a newer one is complete (0 = keep all)
  std::string resume_mode = "disable"; // disable | auto (latest complete checkpoint in the run) | resume_path
  std::string resume_from_path;        // checkpoint directory for resume_mode: resume_path
  void visit(FieldVisitor& v);
};

// Walks sections: section() is called before that section's fields.
class RecipeVisitor : public FieldVisitor {
 public:
  virtual void section(const char* name, const char* doc) = 0;
};

struct Recipe {
  ModelConfig model;
  QuantizationConfig quantization;
  LoraConfig lora;
  RolloutConfig rollout;
  AlgorithmConfig algorithm;
  DataConfig data;
  RewardConfig reward;
  TrainerConfig trainer;
  SftConfig sft;
  LoggingConfig logging;
  CheckpointConfig checkpoint;

  void visit(RecipeVisitor& v);
};

}  // namespace fp8rl::recipe
