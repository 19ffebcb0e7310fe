#include "core/recipe/recipe.h"

namespace fp8rl::recipe {

void ModelConfig::visit(FieldVisitor& v) {
  v.field("path", path, "HF checkpoint directory (config.json, *.safetensors, tokenizer.json)");
  v.choice("init_preset", init_preset, {"", "tiny", "76m", "0.6b", "1.7b", "4b", "8b", "14b", "32b"},
           "instead of path: a randomly initialised Qwen3 model of this preset (no downloads)");
  v.field("tokenizer_path", tokenizer_path, "tokenizer directory; empty = model.path");
  v.choice("chat_template", chat_template, {"auto", "chatml", "llama3", "raw"},
           "auto reads tokenizer_config.json; raw feeds the prompt text as is");
  v.choice("dtype", dtype, {"bfloat16", "float32"}, "dtype of everything that is not FP8");
  v.field("enable_gradient_checkpointing", enable_gradient_checkpointing,
          "recompute decoder layers in backward to save activation memory");
}

std::string paired_activation_scaling(const std::string& weight_scaling) {
  return weight_scaling == "block" ? "group" : weight_scaling == "channel" ? "token" : "tensor";
}

void QuantizationConfig::visit(FieldVisitor& v) {
  v.choice("quant_method", quant_method, {"fp8", "none"},
           "fp8: FP8 weights shared by rollout and trainer; none: the BF16 baseline");
  v.choice("fmt", fmt, {"e4m3", "e5m2"}, "FP8 format of weights and activations");
  v.choice("weight_scaling", weight_scaling, {"block", "channel", "tensor"},
           "granularity of the FP32 weight scales");
  v.field("weight_block_size", weight_block_size, "[out, in] tile sharing one weight scale (block scaling)");
  v.choice("activation_scheme", activation_scheme, {"dynamic"}, "activation scales computed from the data each step");
  v.choice("activation_scaling", activation_scaling, {"group", "token", "tensor"},
           "group: 1 x 128 along K; token: one scale per row; tensor: one scale");
  v.field("use_weight_pow2_scale", use_weight_pow2_scale, "round weight scales up to powers of two");
  v.field("use_activation_pow2_scale", use_activation_pow2_scale, "round activation scales up to powers of two");
  v.field("num_first_layers_in_bf16", num_first_layers_in_bf16, "keep the first N decoder layers in BF16");
  v.field("num_last_layers_in_bf16", num_last_layers_in_bf16, "keep the last N decoder layers in BF16");
  v.field("modules_in_bf16", modules_in_bf16, "module-name glob patterns kept in BF16, e.g. '*.mlp.down_proj'");
}

void LoraConfig::visit(FieldVisitor& v) {
  v.field("rank", rank, "LoRA rank; 0 = full fine-tuning");
  v.field("alpha", alpha, "LoRA scaling is alpha / rank");
  v.field("dropout", dropout, "dropout on the adapter input");
  v.field("target_modules", target_modules, "all-linear or projection names: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj");
}

void RolloutConfig::visit(FieldVisitor& v) {
  v.field("n", n, "samples per prompt (the GRPO group size)");
  v.field("temperature", temperature, "sampling temperature; 0 = greedy");
  v.field("top_p", top_p, "nucleus sampling mass in (0, 1]");
  v.field("top_k", top_k, "top-k sampling; -1 = off");
  v.field("max_response_length", max_response_length, "generated tokens per sample");
  v.field("stop", stop, "stop strings: a sample ends once its generated text holds one; rewards see the text before it");
  v.field("gpu_memory_utilization", gpu_memory_utilization, "fraction of GPU memory the KV block pool may fill up to");
  v.field("max_num_seqs", max_num_seqs, "sequences decoded together");
  v.choice("kv_cache_dtype", kv_cache_dtype, {"auto", "fp8"}, "auto = model dtype; fp8 = E4M3 K/V with one scale per layer for K and for V");
  v.field("enable_prefix_caching", enable_prefix_caching, "compute each prompt's KV once for its n samples");
  v.field("enforce_eager", enforce_eager, "true = decode without CUDA graphs");
  v.field("async_scheduling", async_scheduling,
          "true = schedule and launch each step before reading the previous step's tokens (host work overlaps the GPU's; "
          "the same sampling streams, stops seen one step later)");
  v.choice("shared_prefix_decode", shared_prefix_decode, {"auto", "true", "false"},
           "true = decode steps read the prompt blocks a prompt's samples share once per chunk of samples "
           "(CUDA decode kernel; the same attention, summed in another order); auto = only in a rollout whose shared "
           "prompt blocks in flight outgrow twice the GPU's L2 cache a layer (below that L2 already serves them)");
  v.field("split_mixed_steps", split_mixed_steps,
          "true = a step where waiting sequences prefill beside decoding ones runs its one-token rows on the paged decode "
          "kernel and gathers only the others' keys (the same attention)");
  v.field("keep_decode_graphs", keep_decode_graphs,
          "true = decode CUDA graphs are captured once and kept across rollouts (they reach each rollout's KV cache "
          "through a fixed table of its addresses); false = captured per rollout");
}

void AlgorithmConfig::visit(FieldVisitor& v) {
  v.choice("adv_estimator", adv_estimator, {"grpo", "dr_grpo"},
           "grpo: (r - mean) / (std + eps) per group; dr_grpo: r - mean");
  v.field("norm_adv_by_batch", norm_adv_by_batch,
          "also whiten advantages over the batch (over groups with a signal; all-equal groups stay 0)");
  v.field("clip_ratio_low", clip_ratio_low, "PPO clip: ratio >= 1 - clip_ratio_low");
  v.field("clip_ratio_high", clip_ratio_high, "PPO clip: ratio <= 1 + clip_ratio_high (DAPO: 0.28)");
  v.field("clip_ratio_c", clip_ratio_c, "dual-clip bound for negative advantages (> 1; default 3, as verl); null = off");
  v.choice("loss_agg_mode", loss_agg_mode,
           {"token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"},
           "how per-token losses become one number");
  v.choice("tis_level", tis_level, {"token", "sequence", "geometric", "none"},
           "importance correction of the FP8-rollout / trainer mismatch");
  v.choice("tis_mode", tis_mode, {"truncate", "mask"},
           "truncate: weight min(ratio, tis_cap); mask: drop ratios outside [tis_mask_lower, tis_cap]");
  v.field("tis_cap", tis_cap, "C in min(exp(old_logp - rollout_logp), C); > 1");
  v.field("tis_mask_lower", tis_mask_lower, "lower bound of the kept ratio in mask mode, in (0, 1)");
  v.field("use_kl_loss", use_kl_loss, "KL penalty to the reference policy");
  v.field("kl_loss_coef", kl_loss_coef, "weight of the KL penalty");
  v.choice("kl_loss_type", kl_loss_type, {"k1", "k2", "k3", "kl", "mse", "low_var_kl"},
           "k1 | k2 | k3, or verl's names for them: kl | mse | low_var_kl");
  v.field("entropy_coeff", entropy_coeff, "entropy bonus weight (0 = metric only)");
  v.field("filter_groups", filter_groups, "DAPO dynamic sampling: drop groups whose scores are all equal");
  v.field("max_num_gen_batches", max_num_gen_batches, "with filter_groups: rollout batches per step before giving up");
}

void DataConfig::visit(FieldVisitor& v) {
  v.field("train_files", train_files, "JSONL prompt files (relative to the working directory)");
  v.field("val_files", val_files, "JSONL files evaluated every trainer.test_freq steps");
  v.field("skip_malformed", skip_malformed, "malformed JSONL lines: false = stop at file:line; true = skip them, counted in one warning per file");
  v.field("prompt_key", prompt_key, "JSONL field with the prompt text (a `messages` list is used if present)");
  v.choice("synthetic_task", synthetic_task, {"", "copy", "addition", "countdown"}, "a built-in task instead of files");
  v.field("synthetic_num_prompts", synthetic_num_prompts, "prompts the synthetic task generates");
  v.field("max_prompt_length", max_prompt_length, "prompt tokens after the chat template");
  v.choice("truncation", truncation, {"error", "left", "right"}, "what to do with longer prompts");
  v.field("train_batch_size", train_batch_size, "prompts per step; each gives rollout.n samples");
  v.field("shuffle", shuffle, "shuffle prompts every epoch");
  v.field("seed", seed, "seed of the data order");
}

void RewardConfig::visit(FieldVisitor& v) {
  v.choice("type", type, {"math", "exact_match", "regex", "format", "synthetic", "command"}, "reward function");
  v.field("answer_key", answer_key, "JSONL field with the reference answer");
  v.field("pattern", pattern, "regex/format: PCRE2 (Perl-style) regex the response must match; at most 4096 bytes");
  v.field("command", command, "command: executable reading/writing JSONL on stdin/stdout");
  v.field("timeout_s", timeout_s, "command: seconds it may take to answer a whole batch before it is killed");
  v.field("overlong_buffer_len", overlong_buffer_len, "DAPO overlong shaping buffer in tokens (0 = off)");
  v.field("overlong_penalty_factor", overlong_penalty_factor, "overlong penalty at max_response_length");
}

void TrainerConfig::visit(FieldVisitor& v) {
  v.choice("device", device, {"auto", "cuda", "cpu"}, "auto = cuda when a GPU is present");
  v.field("n_gpus_per_node", n_gpus_per_node,
          "data-parallel ranks on this node, one process per GPU (trainer.device cpu: per share of the cores); train --gpus N sets it");
  v.field("total_training_steps", total_training_steps, "RL steps to run");
  v.field("lr", lr, "AdamW learning rate");
  v.field("weight_decay", weight_decay, "AdamW weight decay");
  v.field("adam_beta1", adam_beta1, "AdamW beta1");
  v.field("adam_beta2", adam_beta2, "AdamW beta2");
  v.field("adam_eps", adam_eps, "AdamW epsilon");
  v.field("lr_warmup_steps", lr_warmup_steps, "linear warm-up, in RL steps (the SFT warm-up: SFT steps)");
  v.choice("lr_scheduler", lr_scheduler, {"constant", "cosine"}, "schedule after warm-up");
  v.field("grad_clip", grad_clip, "max global gradient norm; 0 = off");
  v.field("ppo_mini_batch_size", ppo_mini_batch_size, "prompts per optimizer step; divides data.train_batch_size");
  v.field("ppo_micro_batch_size_per_gpu", ppo_micro_batch_size_per_gpu, "samples per forward/backward");
  v.field("ppo_epochs", ppo_epochs, "passes over each rollout batch");
  v.choice("forward_precision", forward_precision, {"bf16", "fp8"},
           "full fine-tuning of an FP8 model: trainer GEMMs in bf16 (from the FP32 masters) or fp8 (the shared FP8 copy)");
  v.field("seed", seed, "seed of sampling and initialisation");
  v.field("test_freq", test_freq, "validate every N steps (0 = never)");
  v.field("output_dir", output_dir, "runs go to output_dir/experiment_name");
  v.field("experiment_name", experiment_name, "run name; empty = the recipe file's stem");
}

void SftConfig::visit(FieldVisitor& v) {
  v.field("steps", steps, "optimizer steps of the supervised warm-up");
  v.field("lr", lr, "learning rate of the supervised warm-up");
  v.field("batch_size", batch_size, "examples per step of the supervised warm-up");
}

void LoggingConfig::visit(FieldVisitor& v) {
  v.field("logger", logger, "metric sinks: console | jsonl | tensorboard");
  v.choice("level", level, {"debug", "info", "warn", "error"}, "log level");
  v.field("log_interval", log_interval, "steps between console metric lines");
}

void CheckpointConfig::visit(FieldVisitor& v) {
  v.field("save_freq", save_freq, "save every N steps (0 = only at the end)");
  v.field("max_ckpt_to_keep", max_ckpt_to_keep, "complete checkpoints kept (0 = all)");
  v.choice("resume_mode", resume_mode, {"disable", "auto", "resume_path"},
           "auto: continue from the run's latest complete checkpoint");
  v.field("resume_from_path", resume_from_path, "checkpoint directory for resume_mode: resume_path");
}

void Recipe::visit(RecipeVisitor& v) {
  v.section("model", "the policy model and tokenizer");
  model.visit(v);
  v.section("quantization", "FP8 format, scaling and the layers kept in BF16");
  quantization.visit(v);
  v.section("lora", "LoRA adapters (rank 0 = full fine-tuning)");
  lora.visit(v);
  v.section("rollout", "the in-process FP8 generation engine");
  rollout.visit(v);
  v.section("algorithm", "advantages, policy loss, rollout correction (TIS), KL, DAPO");
  algorithm.visit(v);
  v.section("data", "prompts");
  data.visit(v);
  v.section("reward", "verifiers and reward shaping");
  reward.visit(v);
  v.section("trainer", "optimizer, batching, run directory");
  trainer.visit(v);
  v.section("sft", "supervised warm-up (fp8rl sft): the starting skill of a small model");
  sft.visit(v);
  v.section("logging", "logs and metric sinks");
  logging.visit(v);
  v.section("checkpoint", "saving and resuming");
  checkpoint.visit(v);
}

}  // namespace fp8rl::recipe
