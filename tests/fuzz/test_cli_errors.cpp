// The CLI's one mapping from exception kinds to exit codes (apps/cli_errors.h): what the fuzz
// harness asserts through, checked kind by kind.
#include <c10/util/Exception.h>

#include <cstdlib>
#include <filesystem>
#include <new>
#include <string>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "apps/cli_errors.h"
#include "core/util/env.h"
#include "core/util/error.h"
#include "tests/catch.h"

using namespace fp8rl;

namespace {
template <class F>
CliError classify(F&& f) {
  try {
    f();
  } catch (...) {
    return describe_exception(std::current_exception());
  }
  FAIL("no exception");
  return {};
}
}  // namespace

TEST_CASE("exception kinds map to exit codes and one line", "[cli][errors]") {
  CHECK(classify([] { throw ConfigError("r.yaml:3: x"); }).code == 2);
  CHECK(classify([] { throw RuntimeFailure("disk"); }).code == 1);
  const CliError yaml = classify([] { YAML::Load("a: [1").as<int>(); });
  CHECK(yaml.code == 2);
  CHECK(yaml.message.rfind("YAML: ", 0) == 0);
  const CliError json = classify([] { nlohmann::json j = nlohmann::json::parse("1e400"); });
  CHECK(json.code == 2);
  CHECK(json.message.find("JSON: ") == 0);
  const CliError fs = classify([] {
    throw std::filesystem::filesystem_error("status", "loop", std::make_error_code(std::errc::too_many_symbolic_link_levels));
  });
  CHECK(fs.code == 2);
  CHECK(fs.message == "'loop': Too many levels of symbolic links");  // the path and the reason, no library prefix
  CHECK(classify([] { throw std::bad_alloc(); }).message == "out of memory (host)");
  CHECK(classify([] { throw std::logic_error("bug"); }).code == 1);
  CHECK(classify([] { throw 42; }).code == 1);
}

TEST_CASE("ATen errors are one line without the C++ backtrace and out of memory carries a hint", "[cli][errors]") {
  const CliError e = classify([] { TORCH_CHECK(false, "shapes do not match"); });
  CHECK(e.code == 1);
  CHECK(e.message.find("shapes do not match") != std::string::npos);
  CHECK(e.message.find("Exception raised from") == std::string::npos);  // the backtrace's first line
  const CliError oom = classify([] {
    throw c10::OutOfMemoryError({"f", "file.cpp", 1}, "CUDA out of memory. Tried to allocate 2.00 GiB");
  });
  CHECK(oom.code == 1);
  CHECK(oom.message.find("CUDA out of memory. Tried to allocate 2.00 GiB") == 0);
  CHECK(oom.message.find("lower rollout.gpu_memory_utilization") != std::string::npos);
  CHECK(oom.message.find('\n') == std::string::npos);
}

// Benchmark switches (FP8RL_FUSED_ACT_QUANT, FP8RL_HOPPER_PREFILL, FP8RL_CUTLASS_SMALL_M and
// _LARGE_M, FP8RL_SPLIT_MIXED_STEPS, FP8RL_KEEP_DECODE_GRAPHS) read through env_switch: a value
// other than 0/1 is a usage error naming the variable, not a silent default.
TEST_CASE("environment switches take 0 or 1, else one line and exit code 2", "[cli][errors]") {
  const char* name = "FP8RL_TEST_SWITCH";
  ::unsetenv(name);
  CHECK(env_switch(name, true));
  CHECK_FALSE(env_switch(name, false));
  ::setenv(name, "0", 1);
  CHECK_FALSE(env_switch(name, true));
  ::setenv(name, "1", 1);
  CHECK(env_switch(name, false));
  ::setenv(name, "off", 1);
  const CliError e = classify([&] { env_switch(name, true); });
  CHECK(e.code == 2);
  CHECK(e.message == "FP8RL_TEST_SWITCH: expected 0 or 1, got 'off'");
  ::unsetenv(name);
}

// Integer settings (FP8RL_GEMV_DEPTH 2-3, FP8RL_FP8_KV_THREE_STAGES 0-2) read through env_int:
// unset or empty is "not set"; out of range or not a whole number is one line naming the
// variable and the range, exit code 2.
TEST_CASE("environment integers take a value in their range, else one line and exit code 2", "[cli][errors]") {
  const char* name = "FP8RL_TEST_INT";
  ::unsetenv(name);
  CHECK_FALSE(env_int(name, 0, 2).has_value());
  ::setenv(name, "", 1);
  CHECK_FALSE(env_int(name, 0, 2).has_value());
  ::setenv(name, "2", 1);
  CHECK(env_int(name, 0, 2) == 2);
  for (const char* bad : {"3", "-1", "1.5", "two", "2x"}) {
    ::setenv(name, bad, 1);
    const CliError e = classify([&] { (void)env_int(name, 0, 2); });
    INFO(bad);
    CHECK(e.code == 2);
    CHECK(e.message == std::string("environment FP8RL_TEST_INT='") + bad + "': expected an integer in [0, 2]");
  }
  ::unsetenv(name);
}

// fp8rl checks every FP8RL_* setting it reads at startup (apps/main.cpp): a bad value of one it
// would read only later (after a model has loaded) is the same one line, exit code 2, at once;
// variables it does not read are left alone.
TEST_CASE("the startup check reports a bad FP8RL_ setting before any is read", "[cli][errors]") {
  check_env_settings();  // none set here
  ::setenv("FP8RL_BUILD_DIR", "anything", 1);  // the scripts' own: not read by fp8rl
  check_env_settings();
  ::unsetenv("FP8RL_BUILD_DIR");
  for (const auto& [name, bad, expected] :
       {std::tuple<const char*, const char*, const char*>{"FP8RL_PDL", "on", "FP8RL_PDL: expected 0 or 1, got 'on'"},
        {"FP8RL_GEMV_DEPTH", "4", "environment FP8RL_GEMV_DEPTH='4': expected an integer in [2, 3]"},
        {"FP8RL_FP8_KV_THREE_STAGES", "3", "environment FP8RL_FP8_KV_THREE_STAGES='3': expected an integer in [0, 2]"}}) {
    ::setenv(name, bad, 1);
    const CliError e = classify([] { check_env_settings(); });
    INFO(name);
    CHECK(e.code == 2);
    CHECK(e.message == expected);
    ::unsetenv(name);
  }
  for (const auto& [name, good] : {std::pair<const char*, const char*>{"FP8RL_PDL", "0"}, {"FP8RL_GEMV_DEPTH", "3"},
                                    {"FP8RL_FP8_KV_THREE_STAGES", "2"}}) {
    ::setenv(name, good, 1);
    check_env_settings();
    ::unsetenv(name);
  }
}
