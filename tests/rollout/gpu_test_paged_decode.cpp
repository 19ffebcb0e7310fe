// The paged decode kernel (rollout/cuda/paged_decode.cu) against a float32 reference of the same
// attention: each sequence's keys gathered through its block table, K/V heads repeated for GQA,
// softmax(q k^T / sqrt(D)) v. Awkward shapes: head_dim 16..256, GQA ratios 1/3/4/8, contexts of
// 1 key, within one block, on and across block boundaries, and long enough (4097) that batch 1
// splits the context 64 ways; batch 1 (most splits), 3 and 64 (no split). Blocks are handed out in
// a shuffled order, so a wrong table lookup reads another sequence's keys.
//
// Shared-prefix decode: the same kernel reading a chunk's shared keys once for all its members
// (rollout/shared_prefix.h), on batches of prompts x samples, against the same reference.
//
// FP8 KV: the cache holds E4M3 bytes of random values over a scale (kept below 448); the
// reference reads the same bytes dequantized, so the comparison tests the kernel, not E4M3.
//
// Tolerance: inputs are bf16/fp16, the kernel accumulates in fp32 and rounds its output once to
// the input dtype (relative 2^-9 for bf16), so the normalised error lands near 2e-3; 1e-2 leaves
// room for that and still fails on a wrong key, mask, scale or merge (which are O(1) errors).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "core/model/layers.h"
#include "rollout/cuda/rollout_kernels.h"
#include "rollout/kv_cache.h"
#include "rollout/paged_attention.h"
#include "rollout/shared_prefix.h"
#include "tests/catch.h"
#include "tests/rollout/mixed_step_case.h"

using namespace fp8rl::rollout;

namespace {

struct Case {
  int64_t batch, head_dim, group, kv_heads;
  at::ScalarType dtype;
  bool fp8_kv = false;  // the cache holds E4M3 bytes with a scale (rollout/kv_cache.h)
  // q = randn, times q_scale on the first query head of each KV head: the heads a block serves
  // share the kernel's fp16 scaling of q (kHalfMma), so the others' wide softmax shows an error.
  double q_scale = 1.0;
};

// A random K/V cache of `slots` slots in opts' dtype, or (fp8_kv) E4M3 bytes over fixed scales;
// kf, vf: what it holds, as float32 on the CPU.
struct Cache {
  at::Tensor k, v, k_scale, v_scale, kf, vf;
};
Cache random_cache(int64_t slots, int64_t Hkv, int64_t D, const at::TensorOptions& opts, bool fp8_kv) {
  Cache c;
  c.k = at::randn({slots, Hkv, D}, opts);
  c.v = at::randn({slots, Hkv, D}, opts);
  if (fp8_kv) {
    c.k_scale = at::full({1}, 0.02, opts.dtype(at::kFloat));
    c.v_scale = at::full({1}, 0.05, opts.dtype(at::kFloat));
    c.k = (c.k.to(at::kFloat) / c.k_scale).to(at::kFloat8_e4m3fn).view(at::kByte);
    c.v = (c.v.to(at::kFloat) / c.v_scale).to(at::kFloat8_e4m3fn).view(at::kByte);
    c.kf = (c.k.view(at::kFloat8_e4m3fn).to(at::kFloat) * c.k_scale).cpu();
    c.vf = (c.v.view(at::kFloat8_e4m3fn).to(at::kFloat) * c.v_scale).cpu();
  } else {
    c.kf = c.k.to(at::kFloat).cpu();
    c.vf = c.v.to(at::kFloat).cpu();
  }
  return c;
}

// q [B, Hq, D] = randn, times q_scale on the first query head of each group of `group` (Case::q_scale).
at::Tensor random_q(int64_t B, int64_t Hq, int64_t D, int64_t group, double q_scale, const at::TensorOptions& opts) {
  at::Tensor head_scale = at::ones({Hq, 1}, opts.dtype(at::kFloat));  // [Hq, 1]
  head_scale.index_put_({at::indexing::Slice(at::indexing::None, at::indexing::None, group)}, q_scale);
  return (at::randn({B, Hq, D}, opts.dtype(at::kFloat)) * head_scale).to(opts.dtype());
}

// softmax(q k^T / sqrt(D)) v per sequence in float32 on the CPU, K/V gathered through the table
// and repeated for GQA: q [B, Hq, D], kf/vf [slots, Hkv, D] -> [B, Hq, D].
at::Tensor reference(const at::Tensor& qf, const at::Tensor& kf, const at::Tensor& vf, const std::vector<int32_t>& table,
                     int64_t width, const std::vector<int64_t>& lens, int64_t bs, int64_t group) {
  const int64_t B = qf.size(0), D = qf.size(2);
  std::vector<at::Tensor> ref;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> slots;
    for (int64_t t = 0; t < lens[static_cast<size_t>(b)]; ++t)
      slots.push_back(int64_t{table[static_cast<size_t>(b * width + t / bs)]} * bs + t % bs);
    const at::Tensor idx = at::tensor(slots);
    const at::Tensor K = kf.index_select(0, idx).repeat_interleave(group, 1);  // [T, Hq, D]
    const at::Tensor V = vf.index_select(0, idx).repeat_interleave(group, 1);
    const at::Tensor p = at::softmax(at::einsum("hd,thd->ht", {qf[b], K}) / std::sqrt(static_cast<double>(D)), -1);
    ref.push_back(at::einsum("ht,thd->hd", {p, V}));
  }
  return at::stack(ref);
}

double run_case(const Case& c, uint64_t seed) {
  const int64_t bs = 16, Hkv = c.kv_heads, Hq = c.group * Hkv, D = c.head_dim, B = c.batch;
  const std::vector<int64_t> lens_pool{1, 15, 16, 17, 33, 1025, 4097};
  std::vector<int64_t> lens;
  for (int64_t b = 0; b < B; ++b) lens.push_back(B == 1 ? 4097 : lens_pool[(b + seed) % (lens_pool.size() - 1)]);
  int64_t blocks = 1;
  for (int64_t l : lens) blocks += (l + bs - 1) / bs;
  std::vector<int32_t> order(static_cast<size_t>(blocks));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
  int64_t width = 0;
  for (int64_t l : lens) width = std::max(width, (l + bs - 1) / bs);
  std::vector<int32_t> table(static_cast<size_t>(B * width), 0);
  size_t next = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < (lens[b] + bs - 1) / bs; ++j) table[static_cast<size_t>(b * width + j)] = order[next++];

  at::manual_seed(seed);
  const auto opts = at::TensorOptions().device(at::kCUDA).dtype(c.dtype);
  const Cache kv = random_cache(blocks * bs, Hkv, D, opts, c.fp8_kv);
  const at::Tensor q = random_q(B, Hq, D, c.group, c.q_scale, opts);
  const at::Tensor tables = at::tensor(table, at::TensorOptions().dtype(at::kInt)).view({B, width}).to(at::kCUDA);
  std::vector<int32_t> lens32(lens.begin(), lens.end());
  const at::Tensor ctx = at::tensor(lens32, at::TensorOptions().dtype(at::kInt)).to(at::kCUDA);
  const at::Tensor out =
      paged_decode_attention(q, kv.k, kv.v, tables, ctx, bs, kv.k_scale, kv.v_scale).to(at::kFloat).cpu();

  const at::Tensor want = reference(q.to(at::kFloat).cpu(), kv.kf, kv.vf, table, width, lens, bs, c.group);
  REQUIRE(out.sizes() == want.sizes());
  REQUIRE(at::isfinite(out).all().item<bool>());
  return ((out - want).norm() / want.norm()).item<double>();
}

// Shared-prefix decode (rollout/shared_prefix.h): `prompts` prompts with n samples each; a
// sample's block table starts with its prompt's full blocks (shared, as the prefix cache hands
// them out), then blocks of its own (the prompt's partial last block and its generated keys); the
// prompts' first `system_blocks` blocks are one set for all (a common system prompt). Rows are
// shuffled, so a prompt's samples are not neighbours in the batch. The kernel runs with the chunk
// table of plan_shared_prefixes (members per chunk: `members`, or the model's most when 0) and
// without; both against the float32 reference. Returns the worse normalised error; *ran says
// whether the prefix pass ran (shared_prefix_pass_runs). q_scale: as Case's.
double run_shared_case(int64_t group, int64_t D, at::ScalarType dtype, bool fp8_kv, int64_t prompts, int64_t n,
                       int32_t members, int64_t system_blocks, uint64_t seed, int64_t* saved, bool* ran,
                       double q_scale = 1.0) {
  const int64_t bs = 16, Hkv = group == 8 ? 1 : 2, Hq = group * Hkv, B = prompts * n;
  std::mt19937_64 rng(seed);
  const std::vector<int64_t> prompt_pool{1, 15, 16, 17, 40, 100, 513, 1030};
  const std::vector<int64_t> gen_pool{1, 2, 15, 16, 17, 64, 65, 300};
  std::vector<int64_t> prompt_len, lens;  // per prompt; per row (prompt + generated)
  for (int64_t p = 0; p < prompts; ++p) prompt_len.push_back(prompt_pool[(static_cast<size_t>(p) + seed) % prompt_pool.size()]);
  std::vector<int64_t> rows(static_cast<size_t>(B));  // row -> prompt * n + sample
  std::iota(rows.begin(), rows.end(), 0);
  std::shuffle(rows.begin(), rows.end(), rng);
  for (int64_t b = 0; b < B; ++b) lens.push_back(prompt_len[static_cast<size_t>(rows[b] / n)] + gen_pool[rng() % gen_pool.size()]);
  int64_t width = 0, blocks = 1;
  for (int64_t l : lens) {
    width = std::max(width, (l + bs - 1) / bs);
    blocks += (l + bs - 1) / bs;
  }
  std::vector<int32_t> order(static_cast<size_t>(blocks));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  size_t next = 0;
  std::vector<int32_t> system;
  for (int64_t j = 0; j < system_blocks; ++j) system.push_back(order[next++]);
  std::vector<std::vector<int32_t>> prompt_blocks(static_cast<size_t>(prompts));
  for (int64_t p = 0; p < prompts; ++p)
    for (int64_t j = 0; j < prompt_len[static_cast<size_t>(p)] / bs; ++j)
      prompt_blocks[static_cast<size_t>(p)].push_back(j < system_blocks ? system[static_cast<size_t>(j)] : order[next++]);
  std::vector<int32_t> table(static_cast<size_t>(B * width), 0);
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int32_t>& shared = prompt_blocks[static_cast<size_t>(rows[b] / n)];
    for (int64_t j = 0; j < (lens[b] + bs - 1) / bs; ++j)
      table[static_cast<size_t>(b * width + j)] = j < static_cast<int64_t>(shared.size()) ? shared[static_cast<size_t>(j)] : order[next++];
  }

  at::manual_seed(seed);
  const auto opts = at::TensorOptions().device(at::kCUDA).dtype(dtype);
  const Cache kv = random_cache(blocks * bs, Hkv, D, opts, fp8_kv);
  const at::Tensor q = random_q(B, Hq, D, group, q_scale, opts);
  const at::Tensor tables = at::tensor(table, at::TensorOptions().dtype(at::kInt)).view({B, width}).to(at::kCUDA);
  std::vector<int32_t> lens32(lens.begin(), lens.end());
  const at::Tensor ctx = at::tensor(lens32, at::TensorOptions().dtype(at::kInt)).to(at::kCUDA);
  const int32_t M = members > 0 ? members : shared_prefix_members(Hq, Hkv);
  std::vector<int64_t> groups;  // a row's prompt
  for (int64_t b = 0; b < B; ++b) groups.push_back(rows[static_cast<size_t>(b)] / n);
  const SharedPrefixPlan plan = plan_shared_prefixes(table, width, lens32, groups, static_cast<int32_t>(bs), M);
  *ran = shared_prefix_pass_runs(B, Hkv, M);
  if (*ran) *saved += plan.shared_key_reads_saved;
  const at::Tensor chunks = at::tensor(plan.table, at::TensorOptions().dtype(at::kInt)).view({B, plan.width()}).to(at::kCUDA);
  const at::Tensor with =
      paged_decode_attention(q, kv.k, kv.v, tables, ctx, bs, kv.k_scale, kv.v_scale, chunks).to(at::kFloat).cpu();
  const at::Tensor without = paged_decode_attention(q, kv.k, kv.v, tables, ctx, bs, kv.k_scale, kv.v_scale).to(at::kFloat).cpu();
  const at::Tensor want = reference(q.to(at::kFloat).cpu(), kv.kf, kv.vf, table, width, lens, bs, group);
  REQUIRE(at::isfinite(with).all().item<bool>());
  const double e_with = ((with - want).norm() / want.norm()).item<double>();
  const double e_without = ((without - want).norm() / want.norm()).item<double>();
  INFO("with shared prefixes " << e_with << ", without " << e_without);
  return std::max(e_with, e_without);
}

// The cache's dtype and, for an FP8 cache, the dtype of the kernel's MMAs (fp8_kv_half_mma) and
// its pipeline depth (three stages forced whatever the shape: head_dim 128 only, so the modes
// with it run there; the others force two).
struct KvMode {
  bool fp8, half_mma, three_stages;
  const char* name;
  bool runs_at(int64_t head_dim) const { return !three_stages || head_dim == 128; }
  void set() const {
    set_fp8_kv_half_mma(half_mma);
    set_fp8_kv_stages(three_stages ? Fp8KvStages::three : Fp8KvStages::two);
  }
};
constexpr KvMode kKvModes[] = {{false, false, false, ""},
                               {true, false, false, " FP8 KV"},
                               {true, true, false, " FP8 KV, fp16 MMAs"},
                               {true, false, true, " FP8 KV, 3 stages"},
                               {true, true, true, " FP8 KV, fp16 MMAs, 3 stages"}};
// The FP8 kernel switches as they were when a test leaves, also when a check throws.
struct RestoreFp8Switches {
  bool half_mma = fp8_kv_half_mma();
  Fp8KvStages stages = fp8_kv_stages();
  ~RestoreFp8Switches() {
    set_fp8_kv_half_mma(half_mma);
    set_fp8_kv_stages(stages);
  }
};
}  // namespace

TEST_CASE("paged decode kernel with shared prefixes equals the float32 reference", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  const RestoreFp8Switches restore;
  double worst = 0;
  int64_t saved = 0;
  uint64_t seed = 100;
  struct Shape {
    int64_t prompts, n;
  };
  bool ran = false;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf})
    for (const int64_t D : {16, 32, 64, 128, 256})
      for (const int64_t G : {1, 3, 4, 8})
        for (const Shape sh : {Shape{1, 2}, Shape{3, 5}, Shape{8, 8}})
          for (const KvMode kv : kKvModes) {
            if (dtype == at::kHalf && kv.fp8 && D != 128) continue;  // keep the matrix's run time down
            if (!kv.runs_at(D)) continue;
            kv.set();
            const double err = run_shared_case(G, D, dtype, kv.fp8, sh.prompts, sh.n, 0, 1, seed++, &saved, &ran);
            INFO("dtype " << c10::toString(dtype) << kv.name << " D " << D << " G " << G << ": " << sh.prompts
                          << " prompts x " << sh.n << " samples: normalised error " << err);
            CHECK(err < 1e-2);
            // Two rows split 64 ways already and go without the pass; 15 and 64 rows take it.
            if (sh.prompts * sh.n >= 15) CHECK(ran);
            worst = std::max(worst, err);
          }
  // Fewer members per chunk than the kernel can take (the last chunk of a group then differs in
  // size), no common system prompt, and a batch of 256 (64 prompts x 4).
  for (const int32_t members : {2, 3}) {
    const double err = run_shared_case(4, 128, at::kBFloat16, false, 5, 7, members, 0, seed++, &saved, &ran);
    INFO("members " << members << ": normalised error " << err);
    CHECK(err < 1e-2);
    CHECK(ran);
  }
  CHECK(run_shared_case(4, 128, at::kBFloat16, true, 64, 4, 0, 2, seed++, &saved, &ran) < 1e-2);
  CHECK(ran);
  CHECK(saved > 0);
  WARN("paged decode with shared prefixes vs float32 reference: worst normalised error " << worst);
}

TEST_CASE("paged decode kernel equals the gathered float32 reference on awkward shapes", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  const RestoreFp8Switches restore;
  double worst = 0;
  uint64_t seed = 1;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf})
    for (const int64_t D : {16, 32, 64, 128, 256})
      for (const int64_t G : {1, 3, 4, 8})
        for (const int64_t B : {1, 3, 64}) {
          for (const KvMode kv : kKvModes) {
            if (!kv.runs_at(D)) continue;
            kv.set();
            const Case c{B, D, G, G == 8 ? 1 : 2, dtype, kv.fp8};
            const double err = run_case(c, seed++);
            INFO("dtype " << c10::toString(dtype) << kv.name << " D " << D << " G " << G << " B " << B
                          << ": normalised error " << err);
            CHECK(err < 1e-2);
            worst = std::max(worst, err);
          }
        }
  WARN("paged decode vs float32 reference: worst normalised error " << worst);
}

// Queries past fp16's range (|q| up to ~8e4 in bf16) in the first head of each group: with fp16
// MMAs the kernel divides the block's q by a power of two before converting it and multiplies
// the scores back, so nothing overflows; the group's other heads (ordinary q, a spread softmax)
// show whether the scores came back at the right scale.
TEST_CASE("paged decode kernel, FP8 cache: queries beyond fp16's range", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  const RestoreFp8Switches restore;
  uint64_t seed = 500;
  for (const bool half_mma : {false, true})
    for (const int64_t D : {64, 128})
      for (const int64_t B : {3, 64}) {
        set_fp8_kv_half_mma(half_mma);
        Case c{B, D, 4, 2, at::kBFloat16, true};
        c.q_scale = 2e4;
        const double err = run_case(c, seed++);
        INFO((half_mma ? "fp16 MMAs" : "bf16 MMAs") << " D " << D << " B " << B << ": normalised error " << err);
        CHECK(err < 1e-2);
      }
  // The shared-prefix pass: a block serves the g heads of up to 16 / g samples, so one sample's
  // large head sets the q scaling of every row the block holds.
  int64_t saved = 0;
  bool ran = false;
  for (const bool half_mma : {false, true}) {
    set_fp8_kv_half_mma(half_mma);
    const double err = run_shared_case(4, 128, at::kBFloat16, true, 8, 8, 0, 1, seed++, &saved, &ran, 2e4);
    INFO((half_mma ? "fp16 MMAs" : "bf16 MMAs") << ", shared prefixes: normalised error " << err);
    CHECK(err < 1e-2);
    CHECK(ran);
  }
}

// A mixed step split in two (rollout/step_context.h): the one-token rows on the decode kernel,
// the others on flash-attention over their own keys, against the unsplit step (every row on
// flash-attention over gathered keys). Same keys, two kernels: bf16 rounding apart.
TEST_CASE("paged attention: a split mixed step equals the unsplit one on CUDA", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  for (const bool fp8 : {false, true}) {
    INFO("fp8 KV " << fp8);
    const auto [whole, split] = fp8rl::test::mixed_step_outputs(at::Device(at::kCUDA, 0), at::kBFloat16, fp8, true);
    const at::Tensor multi = at::tensor({1, 2, 3, 5, 6}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
    const at::Tensor diff = (whole.to(at::kFloat) - split.to(at::kFloat)).abs();
    const double err = diff.max().item<double>(), err_multi = diff.index_select(0, multi).max().item<double>();
    WARN("split vs unsplit mixed step: max |diff| " << err << ", multi-token rows " << err_multi);
    CHECK(err < 2e-2);  // values O(0.3): a few bf16 ulps; a wrong row or key moves them by O(0.1)
    CHECK(err_multi < 1e-2);  // one kernel on the same sequences either way: at most a bf16 ulp
  }
}

TEST_CASE("paged decode kernel: unsupported shapes are refused, not miscomputed", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  const auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor kc = at::zeros({16, 1, 48}, opts);
  CHECK_FALSE(paged_decode_supported(at::kBFloat16, kc.device(), 4, kc));                            // head_dim 48
  CHECK_FALSE(paged_decode_supported(at::kFloat, kc.device(), 4, at::zeros({16, 1, 64}, opts.dtype(at::kFloat))));
  CHECK_FALSE(paged_decode_supported(at::kBFloat16, kc.device(), 32, at::zeros({16, 1, 64}, opts)));  // group 32
  CHECK_FALSE(paged_decode_supported(at::kBFloat16, kc.device(), 12, at::zeros({16, 1, 64}, opts)));  // group 12 (> 8)
  CHECK(paged_decode_supported(at::kBFloat16, kc.device(), 4, at::zeros({16, 1, 64}, opts)));
  CHECK(paged_decode_supported(at::kBFloat16, kc.device(), 4, at::zeros({16, 1, 64}, opts.dtype(at::kByte))));  // FP8
}

// The FP8 KV cache's CUDA write (one fused kernel per tensor) against the same writes on the CPU
// (ATen ops: divide, clamp, cast, index_copy_): the same scales from the first write, the same
// bytes, bit for bit, for a strided value view (as v of a fused q/k/v projection), values past the
// saturation point, and slots in any order.
TEST_CASE("FP8 KV cache writes on CUDA equal the CPU reference bytes", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(21);
  const int64_t L = 2, Hkv = 3, D = 64, bs = 16, blocks = 9;
  KvCacheShape shape{L, Hkv, D, bs, at::kBFloat16, at::kCPU, true};
  KvCache cpu(shape, blocks);
  shape.device = at::kCUDA;
  KvCache gpu(shape, blocks);
  for (int step = 0; step < 2; ++step) {
    const int64_t N = step == 0 ? 37 : 5;
    // Second step: values 8x the first's range, so some saturate at 448 * scale.
    const at::Tensor packed = at::randn({N, 3 * Hkv * D}, at::TensorOptions().dtype(at::kBFloat16)) * (step == 0 ? 1 : 8);
    const at::Tensor k = packed.narrow(1, 0, Hkv * D).view({N, Hkv, D});
    const at::Tensor v = packed.narrow(1, 2 * Hkv * D, Hkv * D).view({N, Hkv, D});  // strided rows
    const at::Tensor slots = at::randperm(blocks * bs, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, N);
    for (int64_t l = 0; l < L; ++l) {
      cpu.write(l, slots, k, v);
      gpu.write(l, slots.to(at::kCUDA), k.to(at::kCUDA), v.to(at::kCUDA));
    }
  }
  for (int64_t l = 0; l < L; ++l) {
    CHECK(at::equal(gpu.k_scale(l).cpu(), cpu.k_scale(l)));
    CHECK(at::equal(gpu.v_scale(l).cpu(), cpu.v_scale(l)));
    CHECK(at::equal(gpu.k(l).cpu(), cpu.k(l)));
    CHECK(at::equal(gpu.v(l).cpu(), cpu.v(l)));
  }
}

// Gathers out of an FP8 cache for prefill (one gather + dequantize kernel per tensor, kv_write.cu)
// against the CPU cache's ATen ops, on caches written alike: bf16, fp16 and fp32 model dtypes, a
// row of 8 elements' multiple and one that is not (3 x 4: the ATen path on both), slots repeated
// and in any order, values saturated at 448 * scale, and an empty gather.
TEST_CASE("FP8 KV cache gathers on CUDA equal the CPU reference", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(22);
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (const int64_t D : {64, 4}) {
      const int64_t L = 2, Hkv = 3, bs = 16, blocks = 5;
      INFO("dtype " << dtype << ", head_dim " << D);
      KvCacheShape shape{L, Hkv, D, bs, dtype, at::kCPU, true};
      KvCache cpu(shape, blocks);
      shape.device = at::kCUDA;
      KvCache gpu(shape, blocks);
      const int64_t N = 53;
      const at::Tensor k = at::randn({N, Hkv, D}, at::TensorOptions().dtype(dtype));
      const at::Tensor v = at::randn({N, Hkv, D}, at::TensorOptions().dtype(dtype)) * 3;
      const at::Tensor slots = at::randperm(blocks * bs, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, N);
      for (int64_t l = 0; l < L; ++l) {
        // A second write 8x the first's range saturates some bytes.
        for (int rep = 0; rep < 2; ++rep) {
          const at::Tensor kk = rep == 0 ? k : k * 8, vv = rep == 0 ? v : v * 8;
          const at::Tensor s = rep == 0 ? slots : slots.narrow(0, 0, 9);
          cpu.write(l, s, kk.narrow(0, 0, s.size(0)), vv.narrow(0, 0, s.size(0)));
          gpu.write(l, s.to(at::kCUDA), kk.narrow(0, 0, s.size(0)).to(at::kCUDA), vv.narrow(0, 0, s.size(0)).to(at::kCUDA));
        }
      }
      const at::Tensor read = at::cat({slots.flip(0), slots.narrow(0, 3, 7), at::zeros({1}, at::kLong)});  // 61 rows
      for (int64_t l = 0; l < L; ++l) {
        for (const at::Tensor& r : {read, read.narrow(0, 0, 0)}) {
          const auto [ck, cv] = cpu.gather(l, r);
          const auto [gk, gv] = gpu.gather(l, r.to(at::kCUDA));
          REQUIRE(gk.scalar_type() == dtype);
          CHECK(at::equal(gk.cpu(), ck));
          CHECK(at::equal(gv.cpu(), cv));
        }
      }
    }
  }
}

// K/V writes into a cache of the model's dtype (one copy kernel for K and V, kv_write.cu) against
// the CPU cache's index_copy_: bf16, fp16 and fp32, a head size that takes 16-byte copies and one
// that does not (6 bf16 = 12 bytes), v as a strided view of a fused projection's output made on
// the GPU, slots in any order.
TEST_CASE("KV cache writes in the model's dtype on CUDA equal the CPU reference", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(22);
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat})
    for (const int64_t D : {64, 6}) {
      INFO(c10::toString(dtype) << " head_dim " << D);
      const int64_t L = 2, Hkv = 3, bs = 16, blocks = 9;
      KvCacheShape shape{L, Hkv, D, bs, dtype, at::kCPU, false};
      KvCache cpu(shape, blocks);
      shape.device = at::kCUDA;
      KvCache gpu(shape, blocks);
      for (const int64_t N : {37, 1}) {
        const at::Tensor packed = at::randn({N, 3 * Hkv * D}, at::TensorOptions().dtype(dtype).device(at::kCUDA));
        const at::Tensor k = packed.narrow(1, 0, Hkv * D).view({N, Hkv, D});
        const at::Tensor v = packed.narrow(1, 2 * Hkv * D, Hkv * D).view({N, Hkv, D});  // strided rows
        const at::Tensor slots = at::randperm(blocks * bs, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, N);
        for (int64_t l = 0; l < L; ++l) {
          cpu.write(l, slots, k.cpu(), v.cpu());
          gpu.write(l, slots.to(at::kCUDA), k, v);
        }
      }
      for (int64_t l = 0; l < L; ++l) {
        CHECK(at::equal(gpu.k(l).cpu(), cpu.k(l)));
        CHECK(at::equal(gpu.v(l).cpu(), cpu.v(l)));
      }
      // The kernel called directly (KvCache falls back to index_copy_ silently): same bytes.
      const int64_t N = 29;
      const auto opts = at::TensorOptions().dtype(dtype).device(at::kCUDA);
      const at::Tensor packed = at::randn({N, 3 * Hkv * D}, opts);
      const at::Tensor k = packed.narrow(1, 0, Hkv * D).view({N, Hkv, D});
      const at::Tensor v = packed.narrow(1, 2 * Hkv * D, Hkv * D).view({N, Hkv, D});
      const at::Tensor slots =
          at::randperm(blocks * bs, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, N).to(at::kCUDA);
      at::Tensor kc = at::zeros({blocks * bs, Hkv, D}, opts), vc = at::zeros({blocks * bs, Hkv, D}, opts);
      fp8rl::cuda::KvCopyArgs a;
      a.k = k.data_ptr();
      a.v = v.data_ptr();
      a.tokens = N;
      a.heads = Hkv;
      a.dim = D;
      a.k_stride_t = k.stride(0);
      a.k_stride_h = k.stride(1);
      a.v_stride_t = v.stride(0);
      a.v_stride_h = v.stride(1);
      a.elem_bytes = static_cast<int>(k.element_size());
      a.slots = slots.data_ptr<int64_t>();
      a.k_cache = kc.data_ptr();
      a.v_cache = vc.data_ptr();
      fp8rl::cuda::kv_write_copy(a, at::cuda::getCurrentCUDAStream().stream());
      CHECK(at::equal(kc, at::zeros_like(kc).index_copy_(0, slots, k)));
      CHECK(at::equal(vc, at::zeros_like(vc).index_copy_(0, slots, v)));
    }
}

// q/k norm + RoPE storing K and V (model::qk_norm_rope_store, the engine's fused_kv_store) against
// the two steps it replaces: qk_norm_rope, then KvCache::write of its k and the projection's v.
// The same q and k, and the same cache bytes, bit for bit: bf16 and fp16, a cache of the model's
// dtype and an FP8 one (scales set by an earlier write, values past saturation), head_dim 64-256
// (both lane layouts of the kernel), 1 and 37 tokens in shuffled slots, q/k/v as strided views of
// one projection's output, a layer without q/k norm weights, and the cache's addresses read from
// a KvDirectory (what a kept CUDA graph uses) or taken from the tensors.
TEST_CASE("q/k norm + RoPE storing K/V equals the rotation then the cache's write", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  c10::InferenceMode inference;  // the fused kernels run under inference only
  at::manual_seed(23);
  const int64_t L = 2, Hq = 6, Hkv = 3, bs = 16, blocks = 9;
  int cases = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf})
    for (const bool fp8 : {false, true})
      for (const int64_t D : {64, 128, 256})
        for (const bool directory : {false, true}) {
          INFO(c10::toString(dtype) << (fp8 ? ", FP8 cache" : "") << " head_dim " << D
                                    << (directory ? ", through a directory" : ""));
          const auto opts = at::TensorOptions().dtype(dtype).device(at::kCUDA);
          const at::Device cuda0(at::kCUDA, 0);  // the directory's tensors name their device index
          const KvCacheShape shape{L, Hkv, D, bs, dtype, cuda0, fp8};
          KvDirectory dir(L, cuda0);
          KvCache want(shape, blocks), got(shape, blocks, directory ? &dir : nullptr);
          const at::Tensor decoy_k = at::zeros_like(got.k(0)), decoy_v = at::zeros_like(got.v(0));
          auto projection = [&](int64_t N, double range) {  // q, k, v [N, heads, D] views of one [N, (Hq + 2 Hkv) D]
            const at::Tensor p = at::randn({N, (Hq + 2 * Hkv) * D}, opts) * range;
            return std::tuple{p.narrow(1, 0, Hq * D).view({N, Hq, D}), p.narrow(1, Hq * D, Hkv * D).view({N, Hkv, D}),
                              p.narrow(1, (Hq + Hkv) * D, Hkv * D).view({N, Hkv, D})};
          };
          const at::Tensor inv_freq = 1.0 / at::pow(10000.0, at::arange(0, D, 2, opts.dtype(at::kFloat)) / D);
          for (const int64_t N : {37, 1}) {
            const at::Tensor slots =
                at::randperm(blocks * bs, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, N).to(at::kCUDA);
            const at::Tensor pos = at::randint(0, 4096, {N}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
            const auto [cos, sin] = fp8rl::model::rope_cos_sin(inv_freq, pos, dtype);
            for (int64_t l = 0; l < L; ++l) {
              // Both caches' first write of the layer (it sets an FP8 layer's scales) goes through write().
              if (N == 37) {
                const auto [q0, k0, v0] = projection(N, 1.0);
                want.write(l, slots, k0, v0);
                got.write(l, slots, k0, v0);
              }
              const auto [q, k, v] = projection(N, N == 1 ? 4.0 : 1.0);  // 4x: some FP8 values saturate
              const bool norms = l == 0;
              const at::Tensor wq = norms ? at::rand({D}, opts) + 0.5 : at::Tensor();
              const at::Tensor wk = norms ? at::rand({D}, opts) + 0.5 : at::Tensor();
              const auto [qr, kr] = fp8rl::model::qk_norm_rope(q, k, wq, wk, 1e-6, cos, sin);
              want.write(l, slots, kr, v);
              // Through a directory the kernel must read the cache's addresses there: the tensors
              // it is handed are decoys that must stay zero.
              const fp8rl::model::KvStoreTarget target{slots,
                                                       directory ? decoy_k : got.k(l),
                                                       directory ? decoy_v : got.v(l),
                                                       got.k_scale(l),
                                                       got.v_scale(l),
                                                       got.bases(l)};
              REQUIRE(got.scales_set(l));
              const auto fused = fp8rl::model::qk_norm_rope_store(q, k, v, wq, wk, 1e-6, cos, sin, target);
              REQUIRE(fused.has_value());
              CHECK(at::equal(fused->first, qr));
              CHECK(at::equal(fused->second, kr));
              ++cases;
            }
          }
          for (int64_t l = 0; l < L; ++l) {
            CHECK(at::equal(got.k(l), want.k(l)));
            CHECK(at::equal(got.v(l), want.v(l)));
          }
          CHECK(decoy_k.count_nonzero().item<int64_t>() == 0);
          CHECK(decoy_v.count_nonzero().item<int64_t>() == 0);
        }
  CHECK(cases == 2 * 2 * 3 * 2 * 2 * L);
  // An FP8 layer whose scales are not set yet is the write's to calibrate: the engine checks
  // scales_set and keeps its write for that layer.
  const KvCache fresh(KvCacheShape{1, Hkv, 64, bs, at::kBFloat16, at::kCUDA, true}, blocks);
  CHECK_FALSE(fresh.scales_set(0));
}
