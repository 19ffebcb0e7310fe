// Logging facade.
//
// The fmt rule for the whole project: torch ships its own fmt/ headers (v12) that shadow the
// distro's (v9, which the distro's compiled spdlog is built on). So:
//   - only core/log.cpp includes spdlog;
//   - a translation unit whose target sees torch's include path never includes <fmt/...>;
//     it builds messages with fp8rl::cat(...) below;
//   - targets without torch (config, CLI) may use the distro's fmt directly.
// tests/lint/fmt_aten.sh checks this on every ctest run.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace fp8rl {

// Concatenates anything with operator<<: cat("step ", 3, " loss ", 0.5).
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

namespace log {

enum class Level { debug, info, warn, error, off };

// "debug" | "info" | "warn" | "error" | "off"; throws ConfigError on anything else.
Level parse_level(std::string_view name);
void set_level(Level level);
// Also write every message to `path` (appending); used for <run_dir>/fp8rl.log.
void add_file_sink(const std::string& path);

void debug(std::string_view msg);
void info(std::string_view msg);
void warn(std::string_view msg);
void error(std::string_view msg);

}  // namespace log
}  // namespace fp8rl
