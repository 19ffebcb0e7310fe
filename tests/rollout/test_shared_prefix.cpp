// The shared-prefix (cascade) decode plan (rollout/shared_prefix.h): which rows of a decode step
// read their first keys together. Checked on hand-made tables and on the block tables the real
// scheduler gives a batch of prompts with n samples each, for the invariants the decode kernel
// relies on: every row lies in exactly one chunk, of rows of one group; a chunk's members map
// their first chunk_len keys to the same cache slots; a row's newest key is never inside its
// prefix; prefix_len of a row is its chunk's chunk_len.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "rollout/scheduler.h"
#include "rollout/shared_prefix.h"
#include "tests/catch.h"

using namespace fp8rl::rollout;

namespace {

// The kernel's invariants, checked by brute force over slots. Returns the number of chunks.
int64_t check_plan(const SharedPrefixPlan& p, const std::vector<int32_t>& tables, int64_t stride,
                   const std::vector<int32_t>& lens, const std::vector<int64_t>& groups, int32_t bs) {
  const int64_t S = static_cast<int64_t>(lens.size()), M = p.members, W = p.width();
  REQUIRE(static_cast<int64_t>(p.table.size()) == S * W);
  std::vector<int> seen(static_cast<size_t>(S), 0);
  int64_t chunks = 0, saved = 0;
  for (int64_t c = 0; c < S; ++c) {
    const int32_t* row = p.table.data() + c * W;
    const int32_t len = row[M];
    int64_t size = 0;
    while (size < M && row[size] >= 0) ++size;
    for (int64_t m = size; m < M; ++m) CHECK(row[m] == -1);  // members packed from the front
    if (size == 0) {
      CHECK(len == 0);
      continue;
    }
    ++chunks;
    CHECK(len % bs == 0);
    if (size == 1) CHECK(len == 0);  // a lone row has nothing to share
    saved += (size - 1) * int64_t{len};
    for (int64_t m = 0; m < size; ++m) {
      const int32_t b = row[m];
      REQUIRE(b < S);
      ++seen[static_cast<size_t>(b)];
      if (size > 1) {  // one group, never a negative one
        CHECK(groups[static_cast<size_t>(b)] >= 0);
        CHECK(groups[static_cast<size_t>(b)] == groups[static_cast<size_t>(row[0])]);
      }
      CHECK(p.table[static_cast<size_t>(b * W + M + 1)] == len);
      CHECK(len <= lens[static_cast<size_t>(b)] - 1);  // the newest key stays in the suffix
      for (int32_t t = 0; t < len; t += bs)            // same block => same slots
        CHECK(tables[static_cast<size_t>(b * stride + t / bs)] == tables[static_cast<size_t>(row[0] * stride + t / bs)]);
    }
  }
  for (int64_t b = 0; b < S; ++b) CHECK(seen[static_cast<size_t>(b)] == 1);
  CHECK(saved == p.shared_key_reads_saved);
  return chunks;
}

// Members and chunk_len of chunk c.
std::vector<int32_t> members_of(const SharedPrefixPlan& p, int64_t c) {
  std::vector<int32_t> m;
  for (int64_t i = 0; i < p.members; ++i)
    if (p.table[static_cast<size_t>(c * p.width() + i)] >= 0) m.push_back(p.table[static_cast<size_t>(c * p.width() + i)]);
  return m;
}
int32_t len_of(const SharedPrefixPlan& p, int64_t c) { return p.table[static_cast<size_t>(c * p.width() + p.members)]; }

}  // namespace

TEST_CASE("shared prefix: members per chunk follow the kernel's 16 rows", "[rollout][shared_prefix]") {
  CHECK(shared_prefix_members(32, 8) == 4);   // Qwen3-8B
  CHECK(shared_prefix_members(16, 8) == 8);   // Qwen3-0.6B
  CHECK(shared_prefix_members(64, 8) == 2);   // Qwen3-32B
  CHECK(shared_prefix_members(8, 8) == 16);   // MHA
  CHECK(shared_prefix_members(24, 8) == 5);   // g = 3: 15 rows
  CHECK(shared_prefix_members(96, 8) == 1);   // g = 12: the kernel's reference path, no sharing
  CHECK(shared_prefix_members(10, 4) == 1);   // not a whole group
}

TEST_CASE("shared prefix: hand-made tables, groups, chunks and common blocks", "[rollout][shared_prefix]") {
  const int32_t bs = 4;
  const int64_t stride = 5;
  // Request 7 (rows 0, 2, 5, 6): one prompt (blocks 10, 11, 12), then blocks of their own; row 6's
  // newest key is in block 11. Request 9 (rows 3, 7): another prompt whose first block is also 10
  // (a common system prompt), then 40, and its own. Request 3 (row 1) alone; rows 4 and 8 padding
  // (group -1, one key in block 0).
  const std::vector<int32_t> tables = {
      10, 11, 12, 20, 0,   // 0: 14 keys
      30, 31, 0, 0, 0,     // 1: 7
      10, 11, 12, 21, 0,   // 2: 13
      10, 40, 41, 0, 0,    // 3: 10
      0, 0, 0, 0, 0,       // 4: padding
      10, 11, 12, 22, 23,  // 5: 17
      10, 11, 0, 0, 0,     // 6: 6
      10, 40, 42, 0, 0,    // 7: 12
      0, 0, 0, 0, 0,       // 8: padding
  };
  const std::vector<int32_t> lens = {14, 7, 13, 10, 1, 17, 6, 12, 1};
  const std::vector<int64_t> groups = {7, 3, 7, 9, -1, 7, 7, 9, -1};
  using V = std::vector<int32_t>;

  SECTION("M = 4: a chunk per request, the padding rows alone") {
    const SharedPrefixPlan p = plan_shared_prefixes(tables, stride, lens, groups, bs, 4);
    CHECK(check_plan(p, tables, stride, lens, groups, bs) == 5);
    CHECK(members_of(p, 0) == V{4});
    CHECK(members_of(p, 1) == V{8});
    CHECK(members_of(p, 2) == V{1});
    CHECK(len_of(p, 2) == 0);
    CHECK(members_of(p, 3) == V{0, 2, 5, 6});
    CHECK(len_of(p, 3) == 4);  // row 6 holds only block 10 in full before its newest key
    CHECK(members_of(p, 4) == V{3, 7});
    CHECK(len_of(p, 4) == 8);  // blocks 10, 40: request 9 never chunks with request 7
    CHECK(members_of(p, 5).empty());
    CHECK(p.shared_key_reads_saved == 3 * 4 + 8);
  }
  SECTION("M = 2: request 7 in two chunks of batch-order rows") {
    const SharedPrefixPlan p = plan_shared_prefixes(tables, stride, lens, groups, bs, 2);
    CHECK(check_plan(p, tables, stride, lens, groups, bs) == 6);
    CHECK(members_of(p, 3) == V{0, 2});
    CHECK(len_of(p, 3) == 12);
    CHECK(members_of(p, 4) == V{5, 6});
    CHECK(len_of(p, 4) == 4);
    CHECK(p.shared_key_reads_saved == 12 + 4 + 8);
  }
  SECTION("M = 1: no sharing at all") {
    const SharedPrefixPlan p = plan_shared_prefixes(tables, stride, lens, groups, bs, 1);
    CHECK(check_plan(p, tables, stride, lens, groups, bs) == 9);
    CHECK(p.shared_key_reads_saved == 0);
  }
  SECTION("rows of one group with nothing in common share nothing") {
    const std::vector<int64_t> one(groups.size(), 5);
    const SharedPrefixPlan p = plan_shared_prefixes(tables, stride, lens, one, bs, 16);
    CHECK(check_plan(p, tables, stride, lens, one, bs) == 1);
    CHECK(len_of(p, 0) == 0);  // rows 1 and 4 hold other first blocks
  }
  SECTION("no rows") {
    const SharedPrefixPlan p = plan_shared_prefixes({}, 5, {}, {}, bs, 4);
    CHECK(p.table.empty());
  }
}

TEST_CASE("shared prefix: a batch of prompts x n samples from the scheduler shares each prompt's full blocks",
          "[rollout][shared_prefix]") {
  const int32_t bs = 16, n = 8, prompts = 5;
  SchedulerConfig c;
  c.num_blocks = 400;
  c.block_size = bs;
  c.max_model_len = 1024;
  Scheduler sched(c);
  std::vector<int32_t> prompt_len;
  for (int32_t p = 0; p < prompts; ++p) {
    const int32_t len = 40 + 37 * p;  // 40 .. 188 tokens: 2 .. 11 full blocks
    std::vector<TokenId> prompt(static_cast<size_t>(len));
    for (int32_t i = 0; i < len; ++i) prompt[static_cast<size_t>(i)] = (p * 7 + i * 3) % 50 + 1;
    RequestParams rp;
    rp.n = n;
    rp.max_new_tokens = 40;
    sched.add_request(prompt, rp);
    prompt_len.push_back(len);
  }
  int decode_steps = 0;
  while (sched.has_unfinished()) {
    const StepPlan plan = sched.schedule();
    REQUIRE_FALSE(plan.empty());
    std::vector<SampledToken> sampled;
    for (const ScheduledSeq& s : plan.seqs)
      if (s.samples) sampled.push_back({s.seq_id, static_cast<TokenId>(7 + s.sample_index), -0.5f});
    if (plan.num_tokens() == static_cast<int64_t>(plan.seqs.size())) {  // a decode step
      ++decode_steps;
      for (const int32_t M : {2, 4, 8, 16}) {
        std::vector<int64_t> groups;
        for (const ScheduledSeq& s : plan.seqs) groups.push_back(s.request_id);
        const SharedPrefixPlan p =
            plan_shared_prefixes(plan.block_tables, plan.max_blocks_per_seq, plan.context_lens, groups, bs, M);
        check_plan(p, plan.block_tables, plan.max_blocks_per_seq, plan.context_lens, groups, bs);
        // Every row shares its prompt's full blocks with its chunk (all samples are running).
        for (size_t b = 0; b < plan.seqs.size(); ++b) {
          const int32_t want = prompt_len[static_cast<size_t>(plan.seqs[b].request_id)] / bs * bs;
          CHECK(p.table[b * static_cast<size_t>(p.width()) + static_cast<size_t>(M) + 1] == want);
        }
      }
    }
    sched.update(sampled);
  }
  CHECK(decode_steps > 30);
}

// The size rule (shared_prefix_pays) at the shapes it was measured on (H100, 50 MiB L2, Qwen3-8B:
// 8 KV heads x 128 dims, K and V: 2048 bytes a token a layer in FP8, 4096 in bf16; 256 slots,
// 8 samples a prompt): 512-token prompts (33.5 / 67 MB a layer) gained nothing from the pass, so
// the rule leaves it off; 2048-token prompts (134 / 268 MB) gained 1.22x / 1.30x, so it takes it.
TEST_CASE("shared prefix: by size, the pass is taken once the shared prompts in flight outgrow twice L2",
          "[rollout][shared_prefix]") {
  const int64_t l2 = int64_t{50} << 20, fp8 = 2 * 8 * 128, bf16 = 2 * fp8;
  const auto prompts = [](int64_t count, int64_t len, int32_t n) { return std::vector<PromptShare>(count, {len, n}); };
  const auto bytes = [&](const std::vector<PromptShare>& p, int64_t per_token) {
    return shared_prompt_bytes_per_layer(p, 256, 16, per_token);
  };
  CHECK(bytes(prompts(32, 512, 8), fp8) == 32.0 * 512 * fp8);
  CHECK_FALSE(shared_prefix_pays(bytes(prompts(32, 512, 8), fp8), l2));
  CHECK_FALSE(shared_prefix_pays(bytes(prompts(32, 512, 8), bf16), l2));
  CHECK_FALSE(shared_prefix_pays(bytes(prompts(8, 512, 8), bf16), l2));  // batch 64
  CHECK(shared_prefix_pays(bytes(prompts(32, 2048, 8), fp8), l2));
  CHECK(shared_prefix_pays(bytes(prompts(32, 2048, 8), bf16), l2));
  // Only whole blocks are shared, and only by prompts with two or more samples.
  CHECK(bytes(prompts(1, 527, 2), fp8) == 512.0 * fp8);
  CHECK(bytes(prompts(32, 2048, 1), fp8) == 0);
  // More samples than slots: only the share in flight at once counts (1024 prompts x 8 samples
  // on 256 slots: 32 prompts at a time).
  CHECK(bytes(prompts(1024, 2048, 8), fp8) == bytes(prompts(32, 2048, 8), fp8));
  // No L2 size (no CUDA): never.
  CHECK_FALSE(shared_prefix_pays(1e12, 0));
  CHECK(bytes({}, fp8) == 0);
}
