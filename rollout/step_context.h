// A StepPlan (rollout/scheduler.h) as the model's per-call AttentionContext
// (core/model/attention.h), the description paged attention (rollout/paged_attention.h) reads:
// sequence boundaries, KV slots of the new tokens, block tables, context lengths and, where the
// step needs them, every key's cache slot and the shared-prefix chunk table.
//
// Three kinds of step, by their sequences' new-token counts:
//   - decode (one each): block tables and context lengths; key slots only when the decode kernel
//     does not run (they cost host time in proportion to the whole context);
//   - prefill (several each): key slots, for attention over gathered keys;
//   - mixed (some one, some several: sequences admitted while others decode): split in two
//     (AttentionContext::split), the one-token sequences described as a decode step and the rest
//     as a prefill, so each part runs on its own path and only the prefill part's keys are
//     gathered.
// Decode steps replayed as CUDA graphs do not come through here: rollout/decode_graphs.h fills
// their fixed buffers.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "core/model/attention.h"
#include "rollout/scheduler.h"

namespace fp8rl::rollout {

struct StepContextOptions {
  bool decode_kernel = false;   // one-token sequences' attention reads block tables (no key slots)
  int32_t prefix_members = 0;   // > 0, decode steps: the chunk table of rollout/shared_prefix.h
  bool split_mixed = true;      // false: a mixed step as one context (tests compare the two)
};

// The context of `plan` for `attention` on `device`. With prefix_members, the keys the chunks
// read once instead of per sequence are added to *shared_key_reads_saved (when not null).
model::AttentionContext step_context(const StepPlan& plan, int32_t block_size, at::Device device,
                                     model::Attention* attention, const StepContextOptions& options,
                                     int64_t* shared_key_reads_saved = nullptr);

}  // namespace fp8rl::rollout
