#include "core/util/pdl.h"

#include <atomic>

#include "core/util/env.h"

namespace fp8rl {
namespace {
EnvToggle g_pdl("FP8RL_PDL", true);
std::atomic<int> g_early{-1};  // -1: not read yet
}  // namespace

bool pdl_enabled() { return g_pdl.get(); }
void set_pdl_enabled(bool on) { g_pdl.set(on); }
int pdl_early_trigger() {
  int v = g_early.load(std::memory_order_relaxed);
  if (v < 0) {
    v = env_int("FP8RL_PDL_EARLY_TRIGGER", 0, 2).value_or(0);
    g_early.store(v, std::memory_order_relaxed);
  }
  return v;
}
void set_pdl_early_trigger(int level) { g_early.store(level, std::memory_order_relaxed); }

}  // namespace fp8rl
