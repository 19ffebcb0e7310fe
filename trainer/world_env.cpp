#include "trainer/world_env.h"

#include <cstdlib>
#include <sstream>
#include <vector>

#include "core/util/env.h"
#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::trainer {

std::optional<WorldEnv> world_env_from_environment() {
  const std::optional<int> world = env_int("WORLD_SIZE", 1, 1 << 16);
  if (!world) return std::nullopt;
  WorldEnv e;
  e.world_size = *world;
  const std::optional<int> rank = env_int("RANK", 0, e.world_size - 1);
  if (!rank) throw ConfigError("environment WORLD_SIZE is set but RANK is not: a launcher sets both");
  e.rank = *rank;
  e.local_rank = env_int("LOCAL_RANK", 0, e.world_size - 1).value_or(e.rank);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", 1, e.world_size).value_or(1);
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 1, 65535).value_or(e.master_port);
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  e.agent_store = agent != nullptr && std::string(agent) == "True";
  return e;
}

void pin_local_gpu(const WorldEnv& env) {
  if (std::getenv("LOCAL_RANK") == nullptr) return;
  std::vector<std::string> visible;
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES"); v != nullptr) {
    std::stringstream ss(v);
    for (std::string item; std::getline(ss, item, ',');)
      if (!item.empty()) visible.push_back(item);
    // Already one device per rank (a launcher that pins, or a CPU run): leave it.
    if (visible.size() <= 1) return;
  }
  const std::string mine = visible.empty() ? std::to_string(env.local_rank)
                                           : visible[static_cast<size_t>(env.local_rank) % visible.size()];
  ::setenv("CUDA_VISIBLE_DEVICES", mine.c_str(), 1);
}

RowRange rank_rows(int64_t count, int rank, int world) {
  const auto split = [&](int r) { return count * r / world; };
  return {split(rank), split(rank + 1)};
}

}  // namespace fp8rl::trainer
