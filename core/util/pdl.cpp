#include "core/util/pdl.h"

#include "core/util/env.h"

namespace fp8rl {
namespace {
EnvToggle g_pdl("FP8RL_PDL", true);
}  // namespace

bool pdl_enabled() { return g_pdl.get(); }
void set_pdl_enabled(bool on) { g_pdl.set(on); }

}  // namespace fp8rl
