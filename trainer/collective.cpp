#include "trainer/collective.h"

#include <algorithm>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "core/util/error.h"
#include "core/util/log.h"
#include "trainer/collective_nccl.h"

namespace fp8rl::trainer {

namespace {

constexpr const char* kSetupKey = "fp8rl/setup";

}  // namespace

// Waits for a collective; a failure there means another rank is gone (or stuck past the
// timeout), which this rank cannot repair: PeerFailure, so a launcher blames the other rank.
void wait_or_peer_failure(const c10::intrusive_ptr<c10d::Work>& work, int rank) {
  try {
    work->wait();
  } catch (const c10::Error& e) {
    throw PeerFailure(cat("rank ", rank, ": lost the other ranks (", e.what_without_backtrace(), ")"));
  } catch (const std::exception& e) {
    throw PeerFailure(cat("rank ", rank, ": lost the other ranks (", e.what(), ")"));
  }
}

struct Collective::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  at::Device device = at::kCPU;
  int rank = 0;

  // `t` on the backend's device (a copy when it lives elsewhere).
  at::Tensor on_device(const at::Tensor& t) const { return t.device() == device ? t : t.to(device); }

  void all_reduce(at::Tensor& t, c10d::ReduceOp::RedOpType op) {
    std::vector<at::Tensor> v{on_device(t.contiguous())};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp(op);
    wait_or_peer_failure(backend->allreduce(v, o), rank);
    if (!v[0].is_same(t)) t.copy_(v[0]);
  }
};

Collective::Collective() = default;

Collective::Collective(const WorldEnv& env, at::Device device, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()), rank_(env.rank), world_(env.world_size) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = env.rank == 0 && !env.agent_store;
  so.numWorkers = env.world_size;
  so.waitWorkers = false;
  so.timeout = timeout;
  try {
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    impl_->store = c10::make_intrusive<c10d::PrefixStore>("fp8rl", tcp);
  } catch (const std::exception& e) {
    throw RuntimeFailure(cat("rank ", env.rank, ": cannot reach the rendezvous store at ", env.master_addr, ":",
                           env.master_port, " (MASTER_ADDR, MASTER_PORT): ", e.what()));
  }
  impl_->device = device;
  impl_->rank = env.rank;
  if (device.is_cuda()) {
    impl_->backend = make_nccl_backend(impl_->store, env.rank, env.world_size, timeout);
  } else {
    auto o = c10d::ProcessGroupGloo::Options::create(timeout);
    o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world_size, o);
  }
  log::info(cat("rank ", env.rank, " of ", env.world_size, " joined the process group (",
                device.is_cuda() ? "NCCL" : "gloo", ", store ", env.master_addr, ":", env.master_port, ")"));
}

Collective::~Collective() = default;

void Collective::all_reduce_sum(at::Tensor& t) {
  if (impl_) impl_->all_reduce(t, c10d::ReduceOp::SUM);
}

double Collective::all_reduce_sum(double x) {
  if (!impl_) return x;
  at::Tensor t = at::full({1}, x, at::TensorOptions().dtype(at::kDouble).device(impl_->device));
  impl_->all_reduce(t, c10d::ReduceOp::SUM);
  return t.item<double>();
}

double Collective::all_reduce_max(double x) {
  if (!impl_) return x;
  at::Tensor t = at::full({1}, x, at::TensorOptions().dtype(at::kDouble).device(impl_->device));
  impl_->all_reduce(t, c10d::ReduceOp::MAX);
  return t.item<double>();
}

void Collective::all_reduce_grads(const std::vector<at::Tensor>& params) {
  if (!impl_) return;
  // Which parameters have a gradient on some rank. One that none of them touched keeps an
  // undefined gradient, as in a single process, so AdamW skips it (a zero gradient would decay
  // its moments and apply weight decay).
  at::Tensor has = at::empty({static_cast<int64_t>(params.size())}, at::kInt);  // [P] on the host
  auto mine = has.accessor<int, 1>();
  for (size_t i = 0; i < params.size(); ++i) mine[static_cast<int64_t>(i)] = params[i].grad().defined() ? 1 : 0;
  std::vector<at::Tensor> has_buf{impl_->on_device(has)};
  wait_or_peer_failure(impl_->backend->allreduce(has_buf), rank_);
  const at::Tensor summed = has_buf[0].cpu();
  const auto any = summed.accessor<int, 1>();
  // One collective per tensor, all in flight before the first wait: no flat copy of every
  // gradient (full fine-tuning of a large model would double the gradient memory).
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  std::vector<std::vector<at::Tensor>> bufs;
  std::vector<size_t> index;  // the parameter of each collective
  bufs.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    if (any[static_cast<int64_t>(i)] == 0) continue;
    at::Tensor& g = const_cast<at::Tensor&>(params[i]).mutable_grad();
    if (!g.defined()) g = at::zeros_like(params[i]);
    bufs.push_back({impl_->on_device(g)});
    works.push_back(impl_->backend->allreduce(bufs.back()));
    index.push_back(i);
  }
  for (size_t j = 0; j < works.size(); ++j) {
    wait_or_peer_failure(works[j], rank_);
    at::Tensor& g = const_cast<at::Tensor&>(params[index[j]]).mutable_grad();
    if (!bufs[j][0].is_same(g)) g.copy_(bufs[j][0]);
  }
}

std::vector<std::vector<int64_t>> Collective::all_gather_words(const std::vector<int64_t>& mine) {
  if (!impl_) return {mine};
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(impl_->device);
  // Lengths first, then every rank's words padded to the longest.
  std::vector<at::Tensor> len_in{at::full({1}, static_cast<int64_t>(mine.size()), i64)};
  std::vector<std::vector<at::Tensor>> len_out(1);
  for (int r = 0; r < world_; ++r) len_out[0].push_back(at::empty({1}, i64));
  wait_or_peer_failure(impl_->backend->allgather(len_out, len_in), rank_);
  std::vector<int64_t> lens;
  int64_t longest = 1;
  for (const at::Tensor& t : len_out[0]) {
    lens.push_back(t.item<int64_t>());
    longest = std::max(longest, lens.back());
  }
  at::Tensor padded = at::zeros({longest}, at::kLong);
  std::copy(mine.begin(), mine.end(), padded.data_ptr<int64_t>());
  std::vector<at::Tensor> in{impl_->on_device(padded)};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < world_; ++r) out[0].push_back(at::empty({longest}, i64));
  wait_or_peer_failure(impl_->backend->allgather(out, in), rank_);
  std::vector<std::vector<int64_t>> result;
  for (int r = 0; r < world_; ++r) {
    const at::Tensor host = out[0][static_cast<size_t>(r)].cpu();
    const int64_t* p = host.data_ptr<int64_t>();
    result.emplace_back(p, p + lens[static_cast<size_t>(r)]);
  }
  return result;
}

void Collective::announce_setup(bool ok) {
  if (impl_ && is_main()) impl_->store->set(kSetupKey, std::vector<uint8_t>{static_cast<uint8_t>(ok ? 1 : 0)});
}

bool Collective::wait_for_setup() {
  if (!impl_ || is_main()) return true;
  impl_->store->wait({kSetupKey}, std::chrono::hours(24 * 7));
  return impl_->store->get(kSetupKey) == std::vector<uint8_t>{1};
}

}  // namespace fp8rl::trainer
