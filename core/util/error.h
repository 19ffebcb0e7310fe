// Typed errors and the exit codes they map to.
//
// The CLI (apps/main.cpp) is the only place that catches these: it prints one line
// `fp8rl: error: <what>` and exits with the code below. Nothing else prints stack traces.
//
//   ConfigError     the user can fix it in a recipe, an override, a path, an argument  -> 2
//   RuntimeFailure  the inputs were fine but the work failed (I/O, CUDA, NaN loss...)  -> 1
//   FP8RL_CHECK     a broken precondition inside fp8rl (a bug): std::logic_error       -> 1
//   PeerFailure     (data parallelism) this rank stops because another rank failed    -> 3
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace fp8rl {

enum ExitCode : int { kExitOk = 0, kExitRuntime = 1, kExitUsage = 2, kExitPeer = 3 };

// Both pass their message through one_line() (below) when they are made, so what() holds the
// whole escaped message: an embedded NUL cannot cut it, a newline cannot split it.
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(const std::string& what);
  explicit ConfigError(const char* what) : ConfigError(std::string(what)) {}
};

class RuntimeFailure : public std::runtime_error {
 public:
  explicit RuntimeFailure(const std::string& what);
  explicit RuntimeFailure(const char* what) : RuntimeFailure(std::string(what)) {}
};

// A rank of a data-parallel run lost the others (a collective failed: a peer died) or was told
// that rank 0 failed its setup. Its own exit code, so a launcher can tell the rank that failed
// first from the ranks that stopped because of it (apps/launch_ranks.h).
class PeerFailure : public RuntimeFailure {
 public:
  explicit PeerFailure(const std::string& what) : RuntimeFailure(what) {}
};

// The longest error line printed (a key, a value or a tensor name from a file can be anything).
inline constexpr size_t kMaxErrorBytes = 1024;

// Every error message passes here before it is printed (apps/main.cpp), so an error is one
// line whatever the input held: control characters (newline, CR, tab, NUL, ESC, DEL, ...) are
// escaped as \n, \r, \t, \0, \xNN; backslashes stay as they are; the text is cut to
// `max_bytes` (never inside a UTF-8 sequence) with "... (N more bytes)".
std::string one_line(std::string_view msg, size_t max_bytes = kMaxErrorBytes);

[[noreturn]] void check_failed(const char* file, int line, const char* expr, const std::string& msg);

}  // namespace fp8rl

// Programming-error check: file:line:expression plus a message, thrown as std::logic_error.
#define FP8RL_CHECK(cond, msg)                                              \
  do {                                                                      \
    if (!(cond)) ::fp8rl::check_failed(__FILE__, __LINE__, #cond, (msg));  \
  } while (0)
