// `fp8rl train --gpus N` (or trainer.n_gpus_per_node: N): this process becomes a small launcher
// that starts N copies of the same command line as ranks 0..N-1 of one data-parallel run, with the
// environment torchrun would give them (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR=127.0.0.1, MASTER_PORT = a free port), and waits for them.
//
// - A rank that fails takes the others down: the launcher says which rank stopped and with what
//   code, stops the rest, and exits with that rank's code (a config error stays exit 2). Ranks
//   that stopped because of it (exit 3, PeerFailure) are not blamed.
// - Ctrl-C or SIGTERM to the launcher is passed to every rank (each finishes its step and rank 0
//   saves a checkpoint; a second one stops them at once). The ranks run in a process group of
//   their own, so a terminal's Ctrl-C reaches them once, through the launcher.
#pragma once

#include <string>
#include <vector>

namespace fp8rl {

// Runs `argv` (argv[0] is ignored: this binary runs again) as `n` ranks; returns the exit code.
int launch_local_ranks(int n, const std::vector<std::string>& argv);

}  // namespace fp8rl
