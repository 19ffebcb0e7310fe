#include "apps/cli_errors.h"

#include <filesystem>
#include <ios>
#include <new>
#include <string_view>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/exceptions.h>

#include "core/util/error.h"
#include "core/util/strings.h"

namespace fp8rl {
namespace {

constexpr std::string_view kOomHint =
    " (hint: lower rollout.gpu_memory_utilization or trainer.ppo_micro_batch_size_per_gpu)";

bool mentions_oom(std::string_view s) { return s.find("out of memory") != std::string_view::npos; }

}  // namespace

CliError describe_exception(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const ConfigError& x) {
    return {kExitUsage, x.what()};
  } catch (const PeerFailure& x) {
    return {kExitPeer, x.what()};
  } catch (const RuntimeFailure& x) {
    return {kExitRuntime, x.what()};
  } catch (const c10::OutOfMemoryError& x) {
    return {kExitRuntime, std::string(x.what_without_backtrace()) + std::string(kOomHint)};
  } catch (const c10::Error& x) {  // ATen/CUDA: the message without the C++ backtrace
    std::string what = x.what_without_backtrace();
    if (mentions_oom(what)) what += kOomHint;
    return {kExitRuntime, "ATen: " + what};
  } catch (const YAML::Exception& x) {  // the loader wraps its own; anything left came from a user's YAML
    return {kExitUsage, "YAML: " + x.msg};
  } catch (const nlohmann::json::exception& x) {  // a user's JSON file (config.json, tokenizer.json, ...)
    return {kExitUsage, "JSON: " + std::string(without_library_tag(x.what()))};
  } catch (const std::filesystem::filesystem_error& x) {  // a bad path: a loop, a permission, a missing dir
    // The path and the system's reason, not libstdc++'s "filesystem error: status: ... [p] [q]".
    std::string what = x.path1().empty() ? std::string("a path") : "'" + x.path1().string() + "'";
    if (!x.path2().empty()) what += " -> '" + x.path2().string() + "'";
    return {kExitUsage, what + ": " + x.code().message()};
  } catch (const std::bad_alloc&) {
    return {kExitRuntime, "out of memory (host)"};
  } catch (const std::ios_base::failure& x) {
    return {kExitRuntime, std::string("I/O error: ") + x.what()};
  } catch (const std::exception& x) {  // FP8RL_CHECK (a bug) and anything else
    return {kExitRuntime, x.what()};
  } catch (...) {
    return {kExitRuntime, "unknown error (a non-standard exception)"};
  }
}

}  // namespace fp8rl
