#include "core/util/pdl.h"

#include "core/util/env.h"

namespace fp8rl {
namespace {
EnvToggle g_pdl("FP8RL_PDL", true);
EnvToggle g_early("FP8RL_PDL_EARLY_TRIGGER", true);
}  // namespace

bool pdl_enabled() { return g_pdl.get(); }
void set_pdl_enabled(bool on) { g_pdl.set(on); }
bool pdl_early_trigger() { return g_early.get(); }
void set_pdl_early_trigger(bool on) { g_early.set(on); }

}  // namespace fp8rl
