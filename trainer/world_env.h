// Who this process is in a data-parallel run, read from the launcher's environment, and how work
// is shared out between ranks. No ATen: the command line reads it before deciding to launch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace fp8rl::trainer {

// The launcher environment, as torchrun and SLURM wrappers set it (and `fp8rl train --gpus N`):
// RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. TORCHELASTIC_USE_AGENT_STORE=True means
// the launcher's agent already serves the store at MASTER_ADDR:MASTER_PORT.
struct WorldEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;  // ranks on this node (LOCAL_WORLD_SIZE; unset: 1)
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;
};

// The environment's WorldEnv, or nullopt when WORLD_SIZE is unset (a plain single-process run).
// ConfigError naming the variable when one is malformed or out of range.
std::optional<WorldEnv> world_env_from_environment();

// Before anything touches CUDA: a rank started with LOCAL_RANK sees only its own GPU (the
// LOCAL_RANK-th of CUDA_VISIBLE_DEVICES, or of all GPUs), so the rest of the program uses cuda:0.
// Does nothing without LOCAL_RANK.
void pin_local_gpu(const WorldEnv& env);

// The rows [begin, end) of `count` items that rank `rank` of `world` takes: contiguous, sizes
// differing by at most one, in rank order.
struct RowRange {
  int64_t begin = 0, end = 0;
};
RowRange rank_rows(int64_t count, int rank, int world);

}  // namespace fp8rl::trainer
