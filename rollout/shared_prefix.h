// Shared-prefix ("cascade") decode: which sequences of a decode step read the same cached
// prompt, so the decode kernel reads those keys once for several of them.
//
// Why. A GRPO rollout decodes a prompt's n samples side by side, and the prefix cache hands them
// the same physical blocks for the prompt (block_pool.h: full blocks are shared, never written
// again). The plain decode kernel serves one sequence per thread block, so at batch 64 with
// n = 8 it reads each 512-token prompt's K/V eight times per layer; with a 256-token response
// that is most of a step's KV bytes. The kernel's MMA has 16 query rows; one KV head serves
// g = Hq / Hkv of them per sequence, so a block can serve M = 16 / g sequences at once
// (Qwen3-8B: g = 4, M = 4) and each shared key is read once per M samples instead of once per
// sample.
//
// How (rollout/cuda/paged_decode.cu): each decode row's attention is split at prefix_len keys.
//   - prefix pass: chunk c (up to M rows sharing their first chunk_len keys) attends over those
//     keys through the block table of its first member, all members' query heads in one block;
//   - suffix pass: each row over its own keys [prefix_len, context_len);
//   - merge: the partial softmax states (max, sum, unnormalised output) of both passes combine
//     exactly as split-K chunks do (log-sum-exp weights), so the result is the same attention.
// A row with no shared prefix has prefix_len 0 and lies in a chunk of chunk_len 0, whose pass
// only marks its slots empty. Every row lies in exactly one chunk, so every partial slot the
// merge reads was written.
//
// This file plans the chunks from a step's host block tables (no ATen, no CUDA): rows are grouped
// by a caller's group id (the engine's: the request, whose n samples the prefix cache gave the
// prompt's full blocks), each group cut into ceil(size / M) chunks of rows in batch order (sizes
// differ by at most one), and a chunk shares the leading blocks all its members have in common,
// never the block holding a member's newest key (so the suffix pass always has a key). Grouping
// by request rather than by equal blocks keeps a chunk within one prompt when prompts share
// their first blocks (a common system prompt): a chunk mixing prompts would share only those.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace fp8rl::rollout {

// Sequences per chunk for a model: the 16 MMA rows of the kernel over the g = Hq / Hkv query
// heads of one KV head (1 when g > 8: no sharing).
int32_t shared_prefix_members(int64_t num_q_heads, int64_t num_kv_heads);

// The chunk table of S decode rows, [S, M + 2] int32 row-major (what the kernel reads):
//   row c, columns [0, M): the batch rows of chunk c, -1 past its size (chunks past the count:
//                          all -1, and the kernel skips them);
//   row c, column M:       chunk_len, the keys chunk c's members share (a multiple of
//                          block_size; 0: no shared pass);
//   row b, column M + 1:   prefix_len of batch row b (= chunk_len of its chunk).
struct SharedPrefixPlan {
  int32_t members = 0;          // M
  std::vector<int32_t> table;   // [S, M + 2]
  int64_t shared_key_reads_saved = 0;  // sum over chunks of (size - 1) * chunk_len
  int32_t width() const { return members + 2; }
};

// block_tables: [S, table_stride] (row b's first blocks cover its keys 0 .. context_lens[b] - 1;
// entries past them are not read); context_lens: [S], each >= 1; groups: [S], rows that may share
// (a negative id: a row alone, as the decode graphs' padding rows).
SharedPrefixPlan plan_shared_prefixes(std::span<const int32_t> block_tables, int64_t table_stride,
                                      std::span<const int32_t> context_lens, std::span<const int64_t> groups,
                                      int32_t block_size, int32_t members);

// The same plan written into `out` ([S, members + 2]), for a caller that owns the buffer (the
// decode graphs' pinned input mirror). Returns shared_key_reads_saved.
int64_t plan_shared_prefixes_into(std::span<const int32_t> block_tables, int64_t table_stride,
                                  std::span<const int32_t> context_lens, std::span<const int64_t> groups,
                                  int32_t block_size, int32_t members, std::span<int32_t> out);

// When it pays (EngineConfig::SharedPrefixDecode::by_size, the default). The plain kernel launches
// a prompt's samples side by side, so their reads of the prompt's shared blocks mostly hit L2 while
// the prompts in flight fit it: then the extra pass and its merge cost more than they save (H100,
// Qwen3-8B shape, batch 64-256: 512-token prompts, 8 samples each, 8-67 MB of shared K/V a layer:
// 0.90-1.00x tokens/s). Once they outgrow L2 the plain kernel reads each prompt from DRAM again for
// its samples (2048-token prompts: 134 MB FP8, 268 MB bf16 a layer: 1.22x and 1.30x tokens/s with
// it). The rule takes the pass from twice L2's size, between those measurements.
struct PromptShare {
  int64_t prompt_len = 0;  // tokens
  int32_t n = 1;           // samples decoding from it
};
// K and V bytes of one layer in the prompt blocks shared by samples in flight together: each
// prompt with n >= 2 samples counts its whole blocks (those the prefix cache shares), scaled by
// the fraction of all samples that max_num_seqs lets run at once.
double shared_prompt_bytes_per_layer(std::span<const PromptShare> prompts, int64_t max_num_seqs, int32_t block_size,
                                     int64_t kv_bytes_per_token_per_layer);
bool shared_prefix_pays(double shared_bytes_per_layer, int64_t l2_bytes);

}  // namespace fp8rl::rollout
