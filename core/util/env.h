// Switches read from the environment, for benchmarks that compare two code paths in one binary
// (FP8RL_FUSED_ACT_QUANT, FP8RL_HOPPER_PREFILL): unset or empty -> the default; "0" / "1";
// anything else is a ConfigError naming the variable and what it expects (one line, exit 2).
#pragma once

namespace fp8rl {

bool env_switch(const char* name, bool default_value);

}  // namespace fp8rl
