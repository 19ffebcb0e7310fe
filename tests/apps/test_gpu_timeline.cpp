// exclusive_ns (apps/gpu_timeline.h): how `fp8rl bench rollout --profile` credits overlapping GPU
// activities, against hand-computed timelines.
#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "apps/gpu_timeline.h"
#include "tests/catch.h"

using fp8rl::exclusive_ns;
using fp8rl::GpuInterval;

TEST_CASE("GPU timeline: disjoint activities keep their durations", "[apps][profile]") {
  CHECK(exclusive_ns({}).empty());
  CHECK(exclusive_ns({{10, 30}, {40, 45}, {45, 100}}) == std::vector<uint64_t>{20, 5, 55});
}

TEST_CASE("GPU timeline: a dependent launch that waits gets the time after its predecessor", "[apps][profile]") {
  // attention [0, 100), then the quantization launched at 60 that waits until 100 and runs to 104,
  // then a GEMM launched at 102 that waits until 104.
  CHECK(exclusive_ns({{0, 100}, {60, 104}, {102, 150}}) == std::vector<uint64_t>{100, 4, 46});
}

TEST_CASE("GPU timeline: covered activities, ties and input order", "[apps][profile]") {
  CHECK(exclusive_ns({{0, 100}, {10, 20}}) == std::vector<uint64_t>{100, 0});  // inside another
  CHECK(exclusive_ns({{0, 100}, {0, 100}}) == std::vector<uint64_t>{100, 0});  // same start: lower index first
  CHECK(exclusive_ns({{50, 80}, {0, 60}}) == std::vector<uint64_t>{20, 60});   // credited in start order
  CHECK(exclusive_ns({{5, 3}, {0, 4}}) == std::vector<uint64_t>{0, 4});        // an end before its start: empty
}

TEST_CASE("GPU timeline: the credited times add up to the busy time", "[apps][profile]") {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<GpuInterval> v(1 + rng() % 40);
    for (GpuInterval& a : v) {
      a.start_ns = rng() % 1000;
      a.end_ns = a.start_ns + rng() % 120;
    }
    std::vector<bool> busy(1200, false);  // the union, nanosecond by nanosecond
    for (const GpuInterval& a : v)
      for (uint64_t t = a.start_ns; t < a.end_ns; ++t) busy[t] = true;
    const std::vector<uint64_t> ex = exclusive_ns(v);
    CHECK(std::accumulate(ex.begin(), ex.end(), uint64_t{0}) ==
          static_cast<uint64_t>(std::count(busy.begin(), busy.end(), true)));
    for (size_t i = 0; i < v.size(); ++i) CHECK(ex[i] <= v[i].end_ns - v[i].start_ns);
  }
}
