#include "core/util/log.h"

#include <memory>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "core/util/error.h"

namespace fp8rl::log {
namespace {

// Messages go to stderr so that stdout stays machine-readable (`fp8rl check` prints YAML).
std::shared_ptr<spdlog::logger>& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto l = std::make_shared<spdlog::logger>("fp8rl", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    l->set_pattern("[%H:%M:%S.%e] %^%l%$ %v");
    l->set_level(spdlog::level::info);
    return l;
  }();
  return instance;
}

}  // namespace

Level parse_level(std::string_view name) {
  if (name == "debug") return Level::debug;
  if (name == "info") return Level::info;
  if (name == "warn") return Level::warn;
  if (name == "error") return Level::error;
  if (name == "off") return Level::off;
  throw ConfigError("log level '" + std::string(name) + "' is not one of: debug, info, warn, error, off");
}

void set_level(Level level) {
  static constexpr spdlog::level::level_enum kMap[] = {spdlog::level::debug, spdlog::level::info,
                                                       spdlog::level::warn, spdlog::level::err,
                                                       spdlog::level::off};
  logger()->set_level(kMap[static_cast<int>(level)]);
}

void add_file_sink(const std::string& path) {
  try {
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
    sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] %l %v");
    logger()->sinks().push_back(std::move(sink));
  } catch (const spdlog::spdlog_ex& e) {
    throw RuntimeFailure("cannot open log file " + path + ": " + e.what());
  }
}

void debug(std::string_view msg) { logger()->debug("{}", msg); }
void info(std::string_view msg) { logger()->info("{}", msg); }
void warn(std::string_view msg) { logger()->warn("{}", msg); }
void error(std::string_view msg) { logger()->error("{}", msg); }

}  // namespace fp8rl::log
