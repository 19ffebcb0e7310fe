// One mixed step by hand, for the CPU and GPU tests of AttentionContext::split
// (rollout/step_context.h): four sequences over a block_size 4 cache,
//   s0: 1 new token at position 5 (5 cached keys),   blocks {0, 1}
//   s1: 3 new tokens at positions 4-6 (4 cached),    blocks {2, 3}
//   s2: 1 new token at position 0 (a 1-token prompt), block {4}
//   s3: 2 new tokens at positions 0-1 (no prefix),    block {5}
// so the one-token rows (0 and 4) sit between the others' rows and both parts have sequences
// with and without a cached prefix.
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "core/model/attention.h"
#include "rollout/kv_cache.h"
#include "rollout/paged_attention.h"
#include "rollout/scheduler.h"
#include "rollout/step_context.h"

namespace fp8rl::test {

inline rollout::StepPlan mixed_step_plan() {
  rollout::StepPlan p;
  p.seqs.resize(4);
  for (int64_t s = 0; s < 4; ++s) {
    p.seqs[static_cast<size_t>(s)].seq_id = s;
    p.seqs[static_cast<size_t>(s)].request_id = s;
  }
  p.input_ids = {1, 2, 3, 4, 5, 6, 7};
  p.positions = {5, 4, 5, 6, 0, 0, 1};
  p.slot_mapping = {5, 12, 13, 14, 16, 20, 21};
  p.cu_seqlens_q = {0, 1, 4, 5, 7};
  p.cu_seqlens_k = {0, 6, 13, 14, 16};
  p.context_lens = {6, 7, 1, 2};
  p.max_blocks_per_seq = 2;
  p.block_tables = {0, 1, 2, 3, 4, rollout::kPadBlock, 5, rollout::kPadBlock};
  p.max_seqlen_q = 3;
  p.max_seqlen_k = 7;
  return p;
}

// Attention of the mixed step through a cache of random keys, as one context and split in two:
// {unsplit, split}, each [7, Hq, D]. `decode_kernel` says whether the split's one-token part
// reads block tables (the CUDA decode kernel) or gathered keys.
inline std::pair<at::Tensor, at::Tensor> mixed_step_outputs(at::Device device, at::ScalarType dtype, bool fp8_kv,
                                                             bool decode_kernel) {
  const int64_t Hq = 6, Hkv = 2, D = 64, block_size = 4;
  rollout::KvCache cache(rollout::KvCacheShape{1, Hkv, D, block_size, dtype, device, fp8_kv}, 8);
  rollout::PagedAttention paged(cache, decode_kernel);
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  at::manual_seed(3);
  const at::Tensor all_slots = at::arange(8 * block_size, at::TensorOptions().dtype(at::kLong).device(device));
  cache.write(0, all_slots, at::randn({8 * block_size, Hkv, D}, opts), at::randn({8 * block_size, Hkv, D}, opts));
  const at::Tensor q = at::randn({7, Hq, D}, opts), k = at::randn({7, Hkv, D}, opts), v = at::randn({7, Hkv, D}, opts);
  const rollout::StepPlan plan = mixed_step_plan();
  rollout::StepContextOptions whole, split;
  whole.split_mixed = false;
  split.decode_kernel = decode_kernel;
  const model::AttentionContext a = rollout::step_context(plan, block_size, device, &paged, whole);
  const model::AttentionContext b = rollout::step_context(plan, block_size, device, &paged, split);
  at::Tensor out_a = paged.forward(q, k, v, a, 0);
  at::Tensor out_b = paged.forward(q, k, v, b, 0);
  return {out_a, out_b};
}

}  // namespace fp8rl::test
