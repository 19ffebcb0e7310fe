// The one mapping from exception kinds to exit codes and one-line messages, used by the CLI
// boundary (apps/main.cpp). Its own translation unit because it names c10::Error (ATen side,
// so no fmt here: core/util/log.h's rule).
//
//   ConfigError, YAML / JSON / filesystem errors (the user's files and paths)        -> 2
//   RuntimeFailure, c10::Error (CUDA OOM with a hint), std::bad_alloc, bugs, others   -> 1
//   PeerFailure (a data-parallel rank stopped because another one failed)             -> 3
#pragma once

#include <exception>
#include <string>

namespace fp8rl {

struct CliError {
  int code = 1;
  std::string message;  // not yet one_line()'d
};

// Classifies `e` (rethrows and catches it).
CliError describe_exception(std::exception_ptr e);

}  // namespace fp8rl
