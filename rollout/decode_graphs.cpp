#include "rollout/decode_graphs.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "core/util/error.h"
#include "core/util/log.h"
#include "rollout/paged_attention.h"
#include "rollout/shared_prefix.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fp8rl::rollout {

std::vector<int64_t> DecodeGraphs::buckets(int64_t max_batch) {
  // Powers of two to 16, then steps of 16 to 128, of 32 to 256, of 64 beyond: padding wastes at
  // most ~25% of a step's rows past 16 (decode GEMMs are weight-bound there, so it costs little).
  std::vector<int64_t> b;
  for (int64_t s = 1; s < max_batch;) {
    b.push_back(s);
    s = s < 16 ? 2 * s : (s < 128 ? s + 16 : (s < 256 ? s + 32 : s + 64));
  }
  b.push_back(max_batch);
  return b;
}

#ifndef FP8RL_WITH_CUDA

struct DecodeGraphs::Impl {};

DecodeGraphs::DecodeGraphs(const model::CausalLM&, model::Attention*, int64_t, int64_t, int64_t, int64_t, int32_t) {
  throw RuntimeFailure("DecodeGraphs: CUDA graphs need a CUDA build");
}
DecodeGraphs::~DecodeGraphs() = default;
bool DecodeGraphs::takes(const StepPlan&) const { return false; }
bool DecodeGraphs::fits(int64_t, int64_t, int32_t) const { return false; }
void DecodeGraphs::set_pad_slot(int64_t) {}
at::Tensor DecodeGraphs::run(const StepPlan&, const std::function<void(const at::Tensor&)>&) { return {}; }
int64_t DecodeGraphs::graphs_captured() const { return 0; }
int64_t DecodeGraphs::pool_idle_bytes() const { return 0; }
int64_t DecodeGraphs::shared_prefix_key_reads_saved() const { return 0; }
double DecodeGraphs::replay_gpu_seconds() { return 0; }
double DecodeGraphs::capture_seconds() const { return 0; }

#else

struct DecodeGraphs::Impl {
  const model::CausalLM& model;
  model::Attention* attention;
  int64_t max_batch, max_blocks, block_size, pad_slot;
  int32_t prefix_members;  // > 0: the chunk table of shared-prefix decode
  int64_t prefix_width;    // its row width, prefix_members + 2 (0 without it)
  int64_t prefix_saved = 0;  // shared_key_reads_saved over the replays
  double capture_seconds = 0;  // wall time in capture(): its eager step, the capture, the syncs
  std::vector<int64_t> groups;  // per row of a replay: its request (padding: -1), for the chunk plan
  std::vector<int64_t> sizes;
  // Static inputs, [max_batch] (tables [max_batch, max_blocks]); a bucket of b uses rows [0, b).
  // Views of two device buffers, each with a pinned host mirror, so a step's inputs go over in
  // two asynchronous copies: longs [3, max_batch] = ids, positions, slots; ints = lens
  // [max_batch], the shared-prefix chunk table [max_batch, prefix_width], then tables row by row
  // (a bucket of b copies the lens, the chunk table and its b table rows).
  at::Tensor longs, ints, host_longs, host_ints;
  at::Tensor ids, positions, slots, tables, lens, prefix;
  at::cuda::CUDAEvent inputs_copied;  // the host mirrors are rewritten only after it
  bool inputs_pending = false;
  at::cuda::MempoolId_t pool;  // one memory pool shared by every bucket's graph
  // [max_batch, V] in the model dtype: every bucket's replay writes its rows [0, b) here. One
  // buffer outside the graphs' pool, so the kept graphs hold one batch of logits, not one per
  // bucket (~0.4 GB at Qwen3's vocabulary and 256 sequences).
  at::Tensor logits;
  struct Captured {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    bool shared_prefix = false;  // its attention runs the shared-prefix pass (reads the chunk table)
  };
  std::map<int64_t, Captured> graphs;
  // Events around each replay, two pairs used in turn: a pair's time is added to replay_ms when it
  // is reused, two replays later (by then the engine has read that step's tokens, so the events
  // have completed, also with one step in flight), or when asked.
  struct ReplayEvents {
    at::cuda::CUDAEvent start{cudaEventDefault}, end{cudaEventDefault};
    bool pending = false;
  };
  ReplayEvents replay_events[2];
  int next_events = 0;
  double replay_ms = 0;

  void settle(ReplayEvents& e) {
    if (!e.pending) return;
    e.end.synchronize();
    replay_ms += e.start.elapsed_time(e.end);
    e.pending = false;
  }

  Impl(const model::CausalLM& m, model::Attention* a, int64_t mb, int64_t mbl, int64_t bs, int64_t ps, int32_t pm)
      : model(m), attention(a), max_batch(mb), max_blocks(mbl), block_size(bs), pad_slot(ps), prefix_members(pm),
        prefix_width(pm > 0 ? pm + 2 : 0), sizes(buckets(mb)) {
    const auto l = at::TensorOptions().dtype(at::kLong);
    const auto i = at::TensorOptions().dtype(at::kInt);
    const int64_t n_ints = max_batch * (1 + prefix_width + max_blocks);
    host_longs = at::empty({3, max_batch}, l.pinned_memory(true));
    host_ints = at::empty({n_ints}, i.pinned_memory(true));
    longs = at::empty({3, max_batch}, l.device(m.device()));
    ints = at::empty({n_ints}, i.device(m.device()));
    ids = longs[0];
    positions = longs[1];
    slots = longs[2];
    lens = ints.narrow(0, 0, max_batch);
    if (prefix_width > 0) prefix = ints.narrow(0, max_batch, max_batch * prefix_width).view({max_batch, prefix_width});
    tables = ints.narrow(0, max_batch * (1 + prefix_width), max_batch * max_blocks).view({max_batch, max_blocks});
    fill_padding(max_batch);
    logits = at::empty({max_batch, m.lm_head_weight().size(0)}, at::TensorOptions().dtype(m.dtype()).device(m.device()));
    pool = at::cuda::graph_pool_handle();
  }

  // Whether bucket b's attention takes the shared-prefix chunk table (paged_attention.h).
  bool shared_prefix(int64_t b) const {
    return prefix_width > 0 && shared_prefix_pass_runs(b, model.config().shape.num_key_value_heads, prefix_members);
  }

  // The forward of rows [0, b) of the static inputs, on the current stream, into logits [0, b).
  void step(int64_t b) {
    model::AttentionContext ctx;
    ctx.attention = attention;
    ctx.cu_seqlens_q_host.resize(static_cast<size_t>(b + 1));
    for (int64_t s = 0; s <= b; ++s) ctx.cu_seqlens_q_host[static_cast<size_t>(s)] = s;
    ctx.max_seqlen_q = 1;
    ctx.slot_mapping = slots.narrow(0, 0, b);
    ctx.block_tables = tables.narrow(0, 0, b);
    ctx.context_lens = lens.narrow(0, 0, b);
    if (shared_prefix(b)) ctx.shared_prefix = prefix.narrow(0, 0, b);
    const at::Tensor hidden = model.forward(ids.narrow(0, 0, b), positions.narrow(0, 0, b), ctx);  // [b, H]
    at::Tensor out = logits.narrow(0, 0, b);                                                        // [b, V]
    model.lm_head_into(hidden, out);
  }

  // Rows [0, b) of the device inputs hold a padding sequence: one key, at pad_slot (before a
  // capture; replays fill padding rows on the host).
  void fill_padding(int64_t b) {
    ids.narrow(0, 0, b).zero_();
    positions.narrow(0, 0, b).zero_();
    slots.narrow(0, 0, b).fill_(pad_slot);
    lens.narrow(0, 0, b).fill_(1);
    tables.narrow(0, 0, b).fill_(static_cast<int32_t>(pad_slot / block_size));
    if (prefix_width > 0) {  // the chunk table of b padding rows: each alone, nothing shared
      const std::vector<int32_t> pad_tables(static_cast<size_t>(b), static_cast<int32_t>(pad_slot / block_size));
      const std::vector<int32_t> pad_lens(static_cast<size_t>(b), 1);
      const std::vector<int64_t> pad_groups(static_cast<size_t>(b), -1);
      const SharedPrefixPlan p =
          plan_shared_prefixes(pad_tables, 1, pad_lens, pad_groups, static_cast<int32_t>(block_size), prefix_members);
      prefix.narrow(0, 0, b).copy_(at::tensor(p.table, at::TensorOptions().dtype(at::kInt)).view({b, prefix_width}));
    }
  }

  Captured& capture(int64_t b) {
    const auto t0 = std::chrono::steady_clock::now();
    fill_padding(b);
    c10::cuda::device_synchronize();
    // Capture on a side stream (the default stream cannot be captured), the same one for the
    // whole process: cuBLAS and the FP8 GEMM keep a workspace per stream, made at the first GEMM
    // there, and a new stream per rollout would leave one more each time. A first eager run
    // there makes what libraries create lazily, which must not be allocated inside a capture.
    static const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, model.device().index());
    Captured c;
    c.shared_prefix = shared_prefix(b);
    {
      const c10::cuda::CUDAStreamGuard guard(stream);
      step(b);
      stream.synchronize();
      c.graph = std::make_unique<at::cuda::CUDAGraph>();
      c.graph->capture_begin(pool);
      step(b);
      c.graph->capture_end();
    }
    c10::cuda::device_synchronize();
    capture_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::debug(cat("rollout: captured the decode graph of batch ", b));
    return graphs.emplace(b, std::move(c)).first->second;
  }
};

DecodeGraphs::DecodeGraphs(const model::CausalLM& model, model::Attention* attention, int64_t max_batch,
                           int64_t max_blocks, int64_t block_size, int64_t pad_slot, int32_t prefix_members)
    : impl_(std::make_unique<Impl>(model, attention, max_batch, max_blocks, block_size, pad_slot, prefix_members)) {
  FP8RL_CHECK(model.device().is_cuda(), "DecodeGraphs: the model is not on a CUDA device");
  FP8RL_CHECK(max_batch > 0 && max_blocks > 0 && block_size > 0, "DecodeGraphs: empty shape");
}

DecodeGraphs::~DecodeGraphs() = default;

bool DecodeGraphs::takes(const StepPlan& plan) const {
  const int64_t S = static_cast<int64_t>(plan.seqs.size());
  if (S == 0 || S > impl_->max_batch || plan.num_tokens() != S || plan.max_blocks_per_seq > impl_->max_blocks)
    return false;
  return std::all_of(plan.seqs.begin(), plan.seqs.end(), [](const ScheduledSeq& s) { return s.samples; });
}

bool DecodeGraphs::fits(int64_t max_batch, int64_t max_blocks, int32_t prefix_members) const {
  return max_batch <= impl_->max_batch && max_blocks <= impl_->max_blocks && prefix_members == impl_->prefix_members;
}

void DecodeGraphs::set_pad_slot(int64_t pad_slot) { impl_->pad_slot = pad_slot; }

at::Tensor DecodeGraphs::run(const StepPlan& plan, const std::function<void(const at::Tensor&)>& patch_ids) {
  FP8RL_CHECK(takes(plan), "DecodeGraphs::run: not a decode step it can take");
  Impl& g = *impl_;
  const int64_t S = static_cast<int64_t>(plan.seqs.size());
  const int64_t b = *std::lower_bound(g.sizes.begin(), g.sizes.end(), S);
  auto it = g.graphs.find(b);
  Impl::Captured& c = it != g.graphs.end() ? it->second : g.capture(b);

  // Inputs: rows [0, S) from the plan, rows [S, b) padding, written into the pinned mirrors and
  // sent in two asynchronous copies. A table row's columns past the plan's width keep older
  // entries: the kernel reads only the blocks a sequence's length covers.
  if (g.inputs_pending) g.inputs_copied.synchronize();  // the last step's copies have left the mirrors
  const int64_t W = plan.max_blocks_per_seq, MB = g.max_batch, MBL = g.max_blocks, PW = g.prefix_width;
  int64_t* hl = g.host_longs.data_ptr<int64_t>();
  int32_t* hi = g.host_ints.data_ptr<int32_t>();
  int32_t* h_tables = hi + MB * (1 + PW);
  const int32_t pad_block = static_cast<int32_t>(g.pad_slot / g.block_size);
  for (int64_t s = 0; s < b; ++s) {
    const bool real = s < S;
    const size_t u = static_cast<size_t>(s);
    hl[s] = real && plan.input_ids[u] != kPendingToken ? plan.input_ids[u] : 0;
    hl[MB + s] = real ? plan.positions[u] : 0;
    hl[2 * MB + s] = real ? plan.slot_mapping[u] : g.pad_slot;
    hi[s] = real ? plan.context_lens[u] : 1;
    int32_t* row = h_tables + s * MBL;
    if (real)
      std::copy_n(plan.block_tables.data() + s * W, W, row);
    else
      row[0] = pad_block;
  }
  if (c.shared_prefix) {  // rows [0, b), padding included (alone), over the table rows just written
    g.groups.assign(static_cast<size_t>(b), -1);
    for (int64_t s = 0; s < S; ++s) g.groups[static_cast<size_t>(s)] = plan.seqs[static_cast<size_t>(s)].request_id;
    g.prefix_saved += plan_shared_prefixes_into(
        std::span<const int32_t>(h_tables, static_cast<size_t>(b * MBL)), MBL, std::span<const int32_t>(hi, static_cast<size_t>(b)),
        g.groups, static_cast<int32_t>(g.block_size), g.prefix_members, std::span<int32_t>(hi + MB, static_cast<size_t>(b * PW)));
  }
  g.longs.copy_(g.host_longs, /*non_blocking=*/true);
  const int64_t n_ints = MB * (1 + PW) + b * MBL;
  g.ints.narrow(0, 0, n_ints).copy_(g.host_ints.narrow(0, 0, n_ints), /*non_blocking=*/true);
  g.inputs_copied.record();
  g.inputs_pending = true;
  if (patch_ids) patch_ids(g.ids.narrow(0, 0, S));
  Impl::ReplayEvents& e = g.replay_events[g.next_events];
  g.next_events ^= 1;
  g.settle(e);
  e.start.record();
  c.graph->replay();
  e.end.record();
  e.pending = true;
  return g.logits.narrow(0, 0, S);
}

int64_t DecodeGraphs::graphs_captured() const { return static_cast<int64_t>(impl_->graphs.size()); }

int64_t DecodeGraphs::pool_idle_bytes() const {
  int64_t idle = 0;
  for (const auto& seg : c10::cuda::CUDACachingAllocator::snapshot(impl_->pool, /*include_traces=*/false).segments)
    if (seg.owner_private_pool_id == impl_->pool) idle += static_cast<int64_t>(seg.total_size - seg.allocated_size);
  return idle;
}
int64_t DecodeGraphs::shared_prefix_key_reads_saved() const { return impl_->prefix_saved; }
double DecodeGraphs::capture_seconds() const { return impl_->capture_seconds; }

double DecodeGraphs::replay_gpu_seconds() {
  for (Impl::ReplayEvents& e : impl_->replay_events) impl_->settle(e);
  return impl_->replay_ms / 1e3;
}

#endif

}  // namespace fp8rl::rollout
