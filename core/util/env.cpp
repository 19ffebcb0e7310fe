#include "core/util/env.h"

#include <cerrno>
#include <cstdlib>
#include <string>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl {

namespace {

// Every FP8RL_* setting read through env_switch, env_int or EnvToggle, with its range (switches:
// 0-1). The README and docs/BENCHMARKS.md say what each one does.
struct EnvSetting {
  const char* name;
  int lo, hi;
};
constexpr EnvSetting kEnvSettings[] = {
    {"FP8RL_CUTLASS_LARGE_M", 0, 1},     {"FP8RL_CUTLASS_SMALL_M", 0, 1},    {"FP8RL_FP8_KV_FEWER_SPLITS", 0, 1},
    {"FP8RL_FP8_KV_HALF_MMA", 0, 1},     {"FP8RL_FP8_KV_THREE_STAGES", 0, 2}, {"FP8RL_FUSED_ACT_QUANT", 0, 1},
    {"FP8RL_FUSED_KV_GATHER", 0, 1},     {"FP8RL_FUSED_KV_STORE", 0, 1},     {"FP8RL_GEMV_DEPTH", 2, 3},
    {"FP8RL_HOPPER_PREFILL", 0, 1},      {"FP8RL_KEEP_DECODE_GRAPHS", 0, 1}, {"FP8RL_PDL", 0, 1},
    {"FP8RL_PDL_EARLY_TRIGGER", 0, 1},   {"FP8RL_SPLIT_MIXED_STEPS", 0, 1},
};

}  // namespace

bool env_switch(const char* name, bool default_value) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return default_value;
  const std::string s(v);
  if (s != "0" && s != "1") throw ConfigError(cat(name, ": expected 0 or 1, got '", s, "'"));
  return s == "1";
}

std::optional<int> env_int(const char* name, int lo, int hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || errno != 0 || x < lo || x > hi)
    throw ConfigError(cat("environment ", name, "='", v, "': expected an integer in [", lo, ", ", hi, "]"));
  return static_cast<int>(x);
}

void check_env_settings() {
  for (const EnvSetting& s : kEnvSettings) {
    if (s.lo == 0 && s.hi == 1)
      env_switch(s.name, false);
    else
      env_int(s.name, s.lo, s.hi);
  }
}

bool EnvToggle::get() const {
  int v = state_.load(std::memory_order_relaxed);
  if (v < 0) {
    int read = env_switch(name_, default_) ? 1 : 0;
    // A set() that came first wins over the environment.
    v = state_.compare_exchange_strong(v, read, std::memory_order_relaxed) ? read : v;
  }
  return v == 1;
}

}  // namespace fp8rl
