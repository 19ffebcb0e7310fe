#include "core/util/pdl.h"

#include <atomic>

#include "core/util/env.h"

namespace fp8rl {
namespace {
std::atomic<int> g_pdl{-1};  // -1: not read from the environment yet
}  // namespace

bool pdl_enabled() {
  int v = g_pdl.load(std::memory_order_relaxed);
  if (v < 0) {
    v = env_switch("FP8RL_PDL", false) ? 1 : 0;
    g_pdl.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

void set_pdl_enabled(bool on) { g_pdl.store(on ? 1 : 0, std::memory_order_relaxed); }

}  // namespace fp8rl
