// The launcher environment of a data-parallel run (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*):
// absent means a single process, malformed values are config errors naming the variable; and
// rank_rows, which shares prompts, validation examples and mini-batches out between ranks.
#include <cstdlib>
#include <string>

#include "core/util/error.h"
#include "tests/catch.h"
#include "trainer/world_env.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

namespace {

// Sets the launcher variables for one scope and clears them after.
struct LauncherEnv {
  LauncherEnv(const char* rank, const char* world, const char* local = nullptr, const char* port = nullptr) {
    set("RANK", rank);
    set("WORLD_SIZE", world);
    set("LOCAL_RANK", local);
    set("MASTER_PORT", port);
  }
  ~LauncherEnv() {
    for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"}) ::unsetenv(v);
  }
  static void set(const char* name, const char* value) {
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
};

std::string error_of(void (*f)()) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("no WORLD_SIZE: a single process", "[trainer][world]") {
  LauncherEnv env(nullptr, nullptr);
  CHECK_FALSE(world_env_from_environment().has_value());
}

TEST_CASE("torchrun's variables give rank, world, local rank and store", "[trainer][world]") {
  LauncherEnv env("3", "4", "1", "29611");
  ::setenv("MASTER_ADDR", "10.1.2.3", 1);
  ::setenv("LOCAL_WORLD_SIZE", "2", 1);
  const auto w = world_env_from_environment();
  ::unsetenv("MASTER_ADDR");
  ::unsetenv("LOCAL_WORLD_SIZE");
  REQUIRE(w.has_value());
  CHECK(w->rank == 3);
  CHECK(w->world_size == 4);
  CHECK(w->local_rank == 1);
  CHECK(w->local_world_size == 2);
  CHECK(w->master_addr == "10.1.2.3");
  CHECK(w->master_port == 29611);
  CHECK_FALSE(w->agent_store);
}

TEST_CASE("malformed launcher variables name the variable", "[trainer][world]") {
  {
    LauncherEnv env("2", "2");  // rank out of range
    CHECK(error_of([] { world_env_from_environment(); }) == "environment RANK='2': expected an integer in [0, 1]");
  }
  {
    LauncherEnv env("0", "two");
    CHECK(error_of([] { world_env_from_environment(); }).find("environment WORLD_SIZE='two'") == 0);
  }
  {
    LauncherEnv env(nullptr, "2");
    CHECK(error_of([] { world_env_from_environment(); }).find("RANK is not") != std::string::npos);
  }
  {
    LauncherEnv env("0", "2", nullptr, "70000");
    CHECK(error_of([] { world_env_from_environment(); }).find("environment MASTER_PORT='70000'") == 0);
  }
}

TEST_CASE("rank_rows covers every row once, contiguous, in rank order", "[trainer][world]") {
  for (const int64_t count : {0, 1, 5, 16, 17}) {
    for (const int world : {1, 2, 3, 8}) {
      int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        const RowRange rr = rank_rows(count, r, world);
        CHECK(rr.begin == next);
        CHECK(rr.end - rr.begin >= count / world);
        CHECK(rr.end - rr.begin <= count / world + 1);
        next = rr.end;
      }
      CHECK(next == count);
    }
  }
}
