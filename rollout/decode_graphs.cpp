#include "rollout/decode_graphs.h"

#include <algorithm>
#include <map>

#include "core/util/error.h"
#include "core/util/log.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
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

DecodeGraphs::DecodeGraphs(const model::CausalLM&, model::Attention*, int64_t, int64_t, int64_t, int64_t) {
  throw RuntimeFailure("DecodeGraphs: CUDA graphs need a CUDA build");
}
DecodeGraphs::~DecodeGraphs() = default;
bool DecodeGraphs::takes(const StepPlan&) const { return false; }
at::Tensor DecodeGraphs::run(const StepPlan&, const std::function<void(const at::Tensor&)>&) { return {}; }
int64_t DecodeGraphs::graphs_captured() const { return 0; }
double DecodeGraphs::replay_gpu_seconds() { return 0; }

#else

struct DecodeGraphs::Impl {
  const model::CausalLM& model;
  model::Attention* attention;
  int64_t max_batch, max_blocks, block_size, pad_slot;
  std::vector<int64_t> sizes;
  // Static inputs, [max_batch] (tables [max_batch, max_blocks]); a bucket of b uses rows [0, b).
  // Views of two device buffers, each with a pinned host mirror, so a step's inputs go over in
  // two asynchronous copies: longs [3, max_batch] = ids, positions, slots; ints = lens
  // [max_batch], then tables row by row (a bucket of b copies the lens and its b rows).
  at::Tensor longs, ints, host_longs, host_ints;
  at::Tensor ids, positions, slots, tables, lens;
  at::cuda::CUDAEvent inputs_copied;  // the host mirrors are rewritten only after it
  bool inputs_pending = false;
  at::cuda::MempoolId_t pool;  // one memory pool shared by every bucket's graph
  struct Captured {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    at::Tensor logits;  // [b, V], written by each replay
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

  Impl(const model::CausalLM& m, model::Attention* a, int64_t mb, int64_t mbl, int64_t bs, int64_t ps)
      : model(m), attention(a), max_batch(mb), max_blocks(mbl), block_size(bs), pad_slot(ps), sizes(buckets(mb)) {
    const auto l = at::TensorOptions().dtype(at::kLong);
    const auto i = at::TensorOptions().dtype(at::kInt);
    host_longs = at::empty({3, max_batch}, l.pinned_memory(true));
    host_ints = at::empty({max_batch * (1 + max_blocks)}, i.pinned_memory(true));
    longs = at::empty({3, max_batch}, l.device(m.device()));
    ints = at::empty({max_batch * (1 + max_blocks)}, i.device(m.device()));
    ids = longs[0];
    positions = longs[1];
    slots = longs[2];
    lens = ints.narrow(0, 0, max_batch);
    tables = ints.narrow(0, max_batch, max_batch * max_blocks).view({max_batch, max_blocks});
    fill_padding(0, max_batch);
    pool = at::cuda::graph_pool_handle();
  }

  // The forward of rows [0, b) of the static inputs, on the current stream.
  at::Tensor step(int64_t b) {
    model::AttentionContext ctx;
    ctx.attention = attention;
    ctx.cu_seqlens_q_host.resize(static_cast<size_t>(b + 1));
    for (int64_t s = 0; s <= b; ++s) ctx.cu_seqlens_q_host[static_cast<size_t>(s)] = s;
    ctx.max_seqlen_q = 1;
    ctx.slot_mapping = slots.narrow(0, 0, b);
    ctx.block_tables = tables.narrow(0, 0, b);
    ctx.context_lens = lens.narrow(0, 0, b);
    const at::Tensor hidden = model.forward(ids.narrow(0, 0, b), positions.narrow(0, 0, b), ctx);  // [b, H]
    return model.lm_head(hidden);                                                                   // [b, V]
  }

  // Rows [from, b) of the device inputs hold a padding sequence: one key, at pad_slot (before a
  // capture; replays fill padding rows on the host).
  void fill_padding(int64_t from, int64_t b) {
    if (from >= b) return;
    ids.narrow(0, from, b - from).zero_();
    positions.narrow(0, from, b - from).zero_();
    slots.narrow(0, from, b - from).fill_(pad_slot);
    lens.narrow(0, from, b - from).fill_(1);
    tables.narrow(0, from, b - from).fill_(static_cast<int32_t>(pad_slot / block_size));
  }

  Captured& capture(int64_t b) {
    fill_padding(0, b);
    c10::cuda::device_synchronize();
    // Capture on a side stream (the default stream cannot be captured), the same one for the
    // whole process: cuBLAS and the FP8 GEMM keep a workspace per stream, made at the first GEMM
    // there, and a new stream per rollout would leave one more each time. A first eager run
    // there makes what libraries create lazily, which must not be allocated inside a capture.
    static const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, model.device().index());
    Captured c;
    {
      const c10::cuda::CUDAStreamGuard guard(stream);
      step(b);
      stream.synchronize();
      c.graph = std::make_unique<at::cuda::CUDAGraph>();
      c.graph->capture_begin(pool);
      c.logits = step(b);
      c.graph->capture_end();
    }
    c10::cuda::device_synchronize();
    log::debug(cat("rollout: captured the decode graph of batch ", b));
    return graphs.emplace(b, std::move(c)).first->second;
  }
};

DecodeGraphs::DecodeGraphs(const model::CausalLM& model, model::Attention* attention, int64_t max_batch,
                           int64_t max_blocks, int64_t block_size, int64_t pad_slot)
    : impl_(std::make_unique<Impl>(model, attention, max_batch, max_blocks, block_size, pad_slot)) {
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
  const int64_t W = plan.max_blocks_per_seq, MB = g.max_batch, MBL = g.max_blocks;
  int64_t* hl = g.host_longs.data_ptr<int64_t>();
  int32_t* hi = g.host_ints.data_ptr<int32_t>();
  const int32_t pad_block = static_cast<int32_t>(g.pad_slot / g.block_size);
  for (int64_t s = 0; s < b; ++s) {
    const bool real = s < S;
    const size_t u = static_cast<size_t>(s);
    hl[s] = real && plan.input_ids[u] != kPendingToken ? plan.input_ids[u] : 0;
    hl[MB + s] = real ? plan.positions[u] : 0;
    hl[2 * MB + s] = real ? plan.slot_mapping[u] : g.pad_slot;
    hi[s] = real ? plan.context_lens[u] : 1;
    int32_t* row = hi + MB + s * MBL;
    if (real)
      std::copy_n(plan.block_tables.data() + s * W, W, row);
    else
      row[0] = pad_block;
  }
  g.longs.copy_(g.host_longs, /*non_blocking=*/true);
  const int64_t n_ints = MB + b * MBL;
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
  return c.logits.narrow(0, 0, S);
}

int64_t DecodeGraphs::graphs_captured() const { return static_cast<int64_t>(impl_->graphs.size()); }

double DecodeGraphs::replay_gpu_seconds() {
  for (Impl::ReplayEvents& e : impl_->replay_events) impl_->settle(e);
  return impl_->replay_ms / 1e3;
}

#endif

}  // namespace fp8rl::rollout
