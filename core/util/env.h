// Switches read from the environment, for benchmarks that compare two code paths in one binary
// (FP8RL_FUSED_ACT_QUANT, FP8RL_HOPPER_PREFILL): unset or empty -> the default; "0" / "1";
// anything else is a ConfigError naming the variable and what it expects (one line, exit 2).
// Every FP8RL_* setting is listed in kEnvSettings (env.cpp), which fp8rl checks at startup
// (check_env_settings), so a bad value stops it before a model loads, not at the setting's first
// read minutes later; tests/lint/env_settings.sh keeps the list complete.
#pragma once

#include <atomic>
#include <optional>

namespace fp8rl {

bool env_switch(const char* name, bool default_value);

// An integer in [lo, hi]; nullopt when unset or empty; anything else is a ConfigError naming the
// variable and the range.
std::optional<int> env_int(const char* name, int lo, int hi);

// Every FP8RL_* variable that is set and listed in kEnvSettings: its value checked against the
// range listed (a ConfigError as env_int's, one line). Variables fp8rl does not read (the scripts'
// own FP8RL_BUILD_DIR, ...) are left alone.
void check_env_settings();

// A process-wide env_switch, read on first use, that tests may set (to run both paths in one
// process). Declare as a function-local or namespace-scope static.
class EnvToggle {
 public:
  constexpr EnvToggle(const char* name, bool default_value) : name_(name), default_(default_value) {}
  bool get() const;
  void set(bool on) { state_.store(on ? 1 : 0, std::memory_order_relaxed); }

 private:
  const char* name_;
  bool default_;
  mutable std::atomic<int> state_{-1};  // -1: not read yet
};

}  // namespace fp8rl
