#include "rollout/step_context.h"

#include <algorithm>
#include <memory>
#include <numeric>
#include <span>
#include <vector>

#include "core/util/error.h"
#include "rollout/shared_prefix.h"
#include "rollout/transfer.h"

namespace fp8rl::rollout {
namespace {

// The context of the plan's sequences `which` (indices into plan.seqs, ascending) alone: their
// boundaries renumbered from 0, their block tables and context lengths, and their keys' slots
// when `key_slots`. No slot_mapping (the caller's whole-step context writes the K/V).
model::AttentionContext sequences_context(const StepPlan& plan, std::span<const int64_t> which, int32_t block_size,
                                          at::Device device, model::Attention* attention, bool key_slots) {
  model::AttentionContext ctx;
  ctx.attention = attention;
  const auto S = static_cast<int64_t>(which.size());
  const auto W = static_cast<size_t>(plan.max_blocks_per_seq);
  ctx.cu_seqlens_q_host.assign(1, 0);
  ctx.cu_seqlens_k_host.assign(1, 0);
  // The whole step's context (every sequence, in order) reads the plan's own lengths and tables;
  // a part's copies its sequences' rows.
  const bool whole = which.size() == plan.seqs.size();
  std::vector<int32_t> part_lens, part_tables;
  if (!whole) {
    part_lens.reserve(which.size());
    part_tables.reserve(which.size() * W);
  }
  for (const int64_t s : which) {
    const auto i = static_cast<size_t>(s);
    const int64_t lq = plan.cu_seqlens_q[i + 1] - plan.cu_seqlens_q[i];
    const int64_t lk = plan.cu_seqlens_k[i + 1] - plan.cu_seqlens_k[i];
    ctx.cu_seqlens_q_host.push_back(ctx.cu_seqlens_q_host.back() + lq);
    ctx.cu_seqlens_k_host.push_back(ctx.cu_seqlens_k_host.back() + lk);
    ctx.max_seqlen_q = std::max(ctx.max_seqlen_q, lq);
    ctx.max_seqlen_k = std::max(ctx.max_seqlen_k, lk);
    if (whole) continue;
    part_lens.push_back(plan.context_lens[i]);
    part_tables.insert(part_tables.end(), plan.block_tables.begin() + static_cast<std::ptrdiff_t>(i * W),
                       plan.block_tables.begin() + static_cast<std::ptrdiff_t>((i + 1) * W));
  }
  const std::span<const int32_t> context_lens = whole ? std::span<const int32_t>(plan.context_lens) : part_lens;
  const std::span<const int32_t> tables = whole ? std::span<const int32_t>(plan.block_tables) : part_tables;
  ctx.cu_seqlens_q = upload(std::span<const int64_t>(ctx.cu_seqlens_q_host), at::kInt, device);
  ctx.cu_seqlens_k = upload(std::span<const int64_t>(ctx.cu_seqlens_k_host), at::kInt, device);
  ctx.context_lens = upload(context_lens, at::kInt, device);
  ctx.block_tables = upload(tables, at::kInt, device).view({S, plan.max_blocks_per_seq});
  if (key_slots) {
    std::vector<int64_t> slots;
    slots.reserve(static_cast<size_t>(ctx.cu_seqlens_k_host.back()));
    for (int64_t j = 0; j < S; ++j) {
      const int32_t* row = tables.data() + static_cast<size_t>(j) * W;
      for (int64_t p = 0; p < context_lens[static_cast<size_t>(j)]; ++p)
        slots.push_back(static_cast<int64_t>(row[p / block_size]) * block_size + p % block_size);
    }
    ctx.key_slots = upload(std::span<const int64_t>(slots), at::kLong, device);
  }
  return ctx;
}

}  // namespace

model::AttentionContext step_context(const StepPlan& plan, int32_t block_size, at::Device device,
                                     model::Attention* attention, const StepContextOptions& options,
                                     int64_t* shared_key_reads_saved) {
  const auto S = static_cast<int64_t>(plan.seqs.size());
  std::vector<int64_t> single, multi;  // sequences with one new token, with several
  for (int64_t s = 0; s < S; ++s)
    (plan.cu_seqlens_q[static_cast<size_t>(s) + 1] - plan.cu_seqlens_q[static_cast<size_t>(s)] == 1 ? single : multi)
        .push_back(s);
  std::vector<int64_t> all(static_cast<size_t>(S));
  std::iota(all.begin(), all.end(), 0);
  const bool mixed = options.split_mixed && !single.empty() && !multi.empty();
  const bool decode = multi.empty();
  model::AttentionContext ctx =
      sequences_context(plan, all, block_size, device, attention, /*key_slots=*/!mixed && !(decode && options.decode_kernel));
  ctx.slot_mapping = upload(std::span<const int64_t>(plan.slot_mapping), at::kLong, device);
  if (mixed) {
    auto split = std::make_shared<model::SplitStep>();
    std::vector<int64_t> single_rows, multi_rows;
    for (const int64_t s : single) single_rows.push_back(plan.cu_seqlens_q[static_cast<size_t>(s)]);
    for (const int64_t s : multi)
      for (int64_t r = plan.cu_seqlens_q[static_cast<size_t>(s)]; r < plan.cu_seqlens_q[static_cast<size_t>(s) + 1]; ++r)
        multi_rows.push_back(r);
    split->single_rows = upload(std::span<const int64_t>(single_rows), at::kLong, device);
    split->multi_rows = upload(std::span<const int64_t>(multi_rows), at::kLong, device);
    split->single = sequences_context(plan, single, block_size, device, attention, !options.decode_kernel);
    split->multi = sequences_context(plan, multi, block_size, device, attention, /*key_slots=*/true);
    ctx.split = std::move(split);
  }
  if (decode && options.prefix_members > 0) {
    std::vector<int64_t> groups;  // a request's samples share its prompt's blocks
    groups.reserve(plan.seqs.size());
    for (const ScheduledSeq& s : plan.seqs) groups.push_back(s.request_id);
    const SharedPrefixPlan p = plan_shared_prefixes(plan.block_tables, plan.max_blocks_per_seq, plan.context_lens, groups,
                                                    block_size, options.prefix_members);
    ctx.shared_prefix = upload(std::span<const int32_t>(p.table), at::kInt, device).view({S, p.width()});
    if (shared_key_reads_saved) *shared_key_reads_saved += p.shared_key_reads_saved;
  }
  return ctx;
}

}  // namespace fp8rl::rollout
