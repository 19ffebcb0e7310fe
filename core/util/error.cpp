#include "core/util/error.h"

namespace fp8rl {

void check_failed(const char* file, int line, const char* expr, const std::string& msg) {
  throw std::logic_error(std::string(file) + ":" + std::to_string(line) + ": check `" + expr +
                         "` failed: " + msg + " (this is a bug in fp8rl)");
}

}  // namespace fp8rl
