// Data parallelism between the ranks of one training run, over LibTorch's c10d.
//
// Each rank is one process with one device (a GPU, or the CPU). Rank 0 hosts the TCPStore
// rendezvous at MASTER_ADDR:MASTER_PORT (unless a launcher's agent hosts it); the backend is
// ProcessGroupNCCL for CUDA tensors and ProcessGroupGloo for CPU tensors. A run without the
// launcher environment has world size 1 and no process group: every collective below is then the
// identity, so the training loop has one code path for any world size.
//
// What the loop exchanges (trainer/rl_step.cpp):
//   all_gather_words  the samples each rank generated and scored, so every rank holds the whole
//                     batch (the DAPO filter and the group advantages see all of it);
//   all_reduce_sum    the old log-probs of each rank's rows (zeros elsewhere), the gradients after
//                     each mini-batch, metric sums;
//   all_reduce_max    phase wall-clock times, the Ctrl-C flag (so every rank stops after the same
//                     step).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "trainer/world_env.h"

namespace fp8rl::trainer {

class Collective {
 public:
  // World size 1, no process group.
  Collective();
  // Joins the process group of `env` for tensors on `device` (NCCL for CUDA, gloo for CPU).
  // `timeout`: how long a collective waits for the other ranks before it fails.
  Collective(const WorldEnv& env, at::Device device, std::chrono::milliseconds timeout);
  ~Collective();
  Collective(const Collective&) = delete;
  Collective& operator=(const Collective&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  bool is_main() const { return rank_ == 0; }

  // In place, over all ranks. Tensors may live on any device (copied to the backend's and back
  // when needed).
  void all_reduce_sum(at::Tensor& t);
  double all_reduce_sum(double x);
  double all_reduce_max(double x);
  // Gradients of `params` summed over ranks (a missing gradient counts as zeros). A parameter
  // with no gradient on any rank keeps an undefined one, as in a single process.
  void all_reduce_grads(const std::vector<at::Tensor>& params);
  // Every rank's `mine`, in rank order (lengths may differ).
  std::vector<std::vector<int64_t>> all_gather_words(const std::vector<int64_t>& mine);

  // Rank 0 finished (or failed) the run's one-time setup (run directory, task files, the
  // supervised warm-up): rank 0 announces it, the other ranks wait for it without a deadline
  // (a warm-up can take hours). wait_for_setup is false when rank 0 reported a failure (rank 0
  // has said why; the waiting rank just stops). Rank 0 and a single process: true at once.
  void announce_setup(bool ok);
  bool wait_for_setup();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0;
  int world_ = 1;
};

}  // namespace fp8rl::trainer
