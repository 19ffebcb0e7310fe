// The NCCL backend of trainer/collective.cpp, in a translation unit of its own: only a CUDA build
// compiles it (ProcessGroupNCCL's headers need NCCL's), and only it includes them.
#pragma once

#include <chrono>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace fp8rl::trainer {

// A ProcessGroupNCCL of `world` ranks over `store`, for the current CUDA device. A CPU-only build
// throws ConfigError (trainer.device cuda needs the CUDA build anyway).
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                                                    std::chrono::milliseconds timeout);

}  // namespace fp8rl::trainer
