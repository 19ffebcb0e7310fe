// What a checkpoint of a run holds, and putting it back: everything the loop needs to continue
// exactly where it stopped (the same samples, the same updates, the same metrics).
//
//   trainable.safetensors  the trainable tensors by model name (adapters, or all dense tensors and
//                          FP8 masters), in their own dtype
//   optimizer.safetensors  AdamW moments, FP32 masters of BF16 tensors, its step count
//   trainer_state.json     completed RL steps, data position (epoch, cursor), LoRA or full
//   resolved_recipe.yaml, metrics.jsonl   the run's recipe and its metrics so far
//
// Random state needs no file: every sample's stream is a function of (trainer.seed, step, prompt,
// sample, position) (rollout/sampler.h), the data order of (data.seed, epoch), LoRA init of
// trainer.seed, and the update itself draws nothing (LoRA dropout, the one draw, is refused with
// checkpointing on and is not resumable bit-for-bit when on: say so in the README).
// FP8 copies are not stored: they are re-quantized from the restored masters, which is what the
// interrupted run held (quantization is deterministic).
#pragma once

#include <cstdint>
#include <filesystem>

#include "trainer/checkpoint_store.h"
#include "trainer/data.h"
#include "trainer/optimizer.h"
#include "trainer/policy.h"

namespace fp8rl::trainer {

// Writes checkpoint `step` (completed steps) through the store (staged, checksummed, renamed).
std::filesystem::path save_run_checkpoint(const CheckpointStore& store, int64_t step, const Policy& policy,
                                          const AdamW& optimizer, const DataOrder& order,
                                          const std::filesystem::path& run_dir);

// Verifies `dir` (checksums), restores policy, optimizer and data order from it, re-syncs the FP8
// copies, and returns its step. ConfigError naming the file for a damaged checkpoint or one made
// for another model or mode (a tensor missing or of another shape).
int64_t load_run_checkpoint(const std::filesystem::path& dir, Policy& policy, AdamW& optimizer, DataOrder& order);

}  // namespace fp8rl::trainer
