#include "core/util/env.h"

#include <cerrno>
#include <cstdlib>
#include <string>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl {

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
