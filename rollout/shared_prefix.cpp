#include "rollout/shared_prefix.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "core/util/error.h"

namespace fp8rl::rollout {

int32_t shared_prefix_members(int64_t num_q_heads, int64_t num_kv_heads) {
  if (num_kv_heads <= 0 || num_q_heads % num_kv_heads != 0) return 1;
  const int64_t g = num_q_heads / num_kv_heads;
  return g > 8 ? 1 : static_cast<int32_t>(16 / g);
}

int64_t plan_shared_prefixes_into(std::span<const int32_t> block_tables, int64_t table_stride,
                                  std::span<const int32_t> context_lens, std::span<const int64_t> groups,
                                  int32_t block_size, int32_t members, std::span<int32_t> out) {
  const int64_t S = static_cast<int64_t>(context_lens.size()), M = members, W = M + 2;
  FP8RL_CHECK(M >= 1 && block_size >= 1, "plan_shared_prefixes: members and block_size must be >= 1");
  FP8RL_CHECK(static_cast<int64_t>(out.size()) == S * W, "plan_shared_prefixes: the output must be [S, members + 2]");
  FP8RL_CHECK(static_cast<int64_t>(groups.size()) == S, "plan_shared_prefixes: one group id per row");
  FP8RL_CHECK(S == 0 || (table_stride >= 1 && static_cast<int64_t>(block_tables.size()) >= S * table_stride),
              "plan_shared_prefixes: block_tables must be [S, table_stride]");
  for (int64_t c = 0; c < S; ++c) {
    std::fill_n(out.begin() + c * W, M, -1);
    out[static_cast<size_t>(c * W + M)] = 0;
    out[static_cast<size_t>(c * W + M + 1)] = 0;
  }
  const auto at = [&](int64_t b, int64_t i) { return block_tables[static_cast<size_t>(b * table_stride + i)]; };
  // Rows by group, in batch order within one; a negative id is a group of its own.
  std::vector<int64_t> order(static_cast<size_t>(S));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return groups[static_cast<size_t>(a)] < groups[static_cast<size_t>(b)]; });

  int64_t saved = 0, chunk = 0;
  for (int64_t i = 0; i < S;) {
    const int64_t g = groups[static_cast<size_t>(order[static_cast<size_t>(i)])];
    int64_t j = i + 1;
    while (g >= 0 && j < S && groups[static_cast<size_t>(order[static_cast<size_t>(j)])] == g) ++j;
    const int64_t size = j - i, chunks = (size + M - 1) / M;
    for (int64_t k = 0; k < chunks; ++k, ++chunk) {
      const int64_t lo = i + k * size / chunks, hi = i + (k + 1) * size / chunks;  // sizes differ by <= 1, each <= M
      const int64_t lead = order[static_cast<size_t>(lo)];
      // Blocks every member holds in full before its newest key (position context_len - 1), and
      // that all members hold in the same order as the first.
      int64_t common = 0;
      if (hi - lo >= 2) {
        common = std::numeric_limits<int64_t>::max();
        for (int64_t r = lo; r < hi; ++r)
          common = std::min<int64_t>(common, (context_lens[static_cast<size_t>(order[static_cast<size_t>(r)])] - 1) / block_size);
        for (int64_t r = lo + 1; r < hi && common > 0; ++r) {
          const int64_t b = order[static_cast<size_t>(r)];
          int64_t same = 0;
          while (same < common && at(b, same) == at(lead, same)) ++same;
          common = same;
        }
      }
      const int32_t len = static_cast<int32_t>(common * block_size);
      out[static_cast<size_t>(chunk * W + M)] = len;
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t b = order[static_cast<size_t>(r)];
        out[static_cast<size_t>(chunk * W + (r - lo))] = static_cast<int32_t>(b);
        out[static_cast<size_t>(b * W + M + 1)] = len;
      }
      saved += (hi - lo - 1) * int64_t{len};
    }
    i = j;
  }
  return saved;
}

SharedPrefixPlan plan_shared_prefixes(std::span<const int32_t> block_tables, int64_t table_stride,
                                      std::span<const int32_t> context_lens, std::span<const int64_t> groups,
                                      int32_t block_size, int32_t members) {
  SharedPrefixPlan p;
  p.members = members;
  p.table.resize(context_lens.size() * static_cast<size_t>(std::max(members, 1) + 2));
  p.shared_key_reads_saved =
      plan_shared_prefixes_into(block_tables, table_stride, context_lens, groups, block_size, members, p.table);
  return p;
}

double shared_prompt_bytes_per_layer(std::span<const PromptShare> prompts, int64_t max_num_seqs, int32_t block_size,
                                     int64_t kv_bytes_per_token_per_layer) {
  FP8RL_CHECK(block_size >= 1 && max_num_seqs >= 1, "shared_prompt_bytes_per_layer: block_size and max_num_seqs must be >= 1");
  double shared_tokens = 0, samples = 0;
  for (const PromptShare& p : prompts) {
    samples += std::max(p.n, 1);
    if (p.n >= 2) shared_tokens += static_cast<double>(p.prompt_len / block_size * block_size);
  }
  const double in_flight = samples > 0 ? std::min(1.0, static_cast<double>(max_num_seqs) / samples) : 0.0;
  return shared_tokens * in_flight * static_cast<double>(kv_bytes_per_token_per_layer);
}

bool shared_prefix_pays(double shared_bytes_per_layer, int64_t l2_bytes) {
  return l2_bytes > 0 && shared_bytes_per_layer >= 2.0 * static_cast<double>(l2_bytes);
}

}  // namespace fp8rl::rollout
