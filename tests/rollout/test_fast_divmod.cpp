// rollout/fast_divmod.h against the compiler's own / and %: every divisor up to 4096 and a few
// past it, each over the numerators where errors would show first (multiples of d and their
// neighbours, the top of the range) and a seeded spread of the rest.
#include "rollout/fast_divmod.h"
#include "tests/catch.h"

#include <random>
#include <vector>

using fp8rl::rollout::FastDivmod;

TEST_CASE("FastDivmod gives n / d and n % d for n below 2^31", "[rollout][decode]") {
  std::vector<uint32_t> divisors;
  for (uint32_t d = 1; d <= 4096; ++d) divisors.push_back(d);
  for (uint32_t d : {65535u, 65536u, 65537u, 1000003u, (1u << 30) - 1, 1u << 30, (1u << 30) + 1, 0x7fffffffu})
    divisors.push_back(d);
  std::mt19937 rng(7);
  constexpr uint32_t kTop = 0x7fffffffu;  // 2^31 - 1
  int64_t checked = 0, wrong = 0;
  for (const uint32_t d : divisors) {
    const FastDivmod f(d);
    std::vector<uint32_t> ns = {0, 1, 2, d - 1, d, d + 1, kTop, kTop - 1, kTop - d, kTop / d * d, kTop / d * d - 1};
    for (uint32_t k : {1u, 2u, 3u, 7u, 1000u, 65536u}) {
      const uint64_t m = uint64_t{k} * d;
      if (m <= kTop) ns.insert(ns.end(), {static_cast<uint32_t>(m - 1), static_cast<uint32_t>(m)});
      if (m + 1 <= kTop) ns.push_back(static_cast<uint32_t>(m + 1));
    }
    for (int i = 0; i < 64; ++i) ns.push_back(rng() & kTop);
    for (const uint32_t n : ns) {
      if (n > kTop) continue;
      uint32_t q = 0, r = 0;
      f.divmod(n, q, r);
      ++checked;
      if (q != n / d || r != n % d) {
        ++wrong;
        if (wrong <= 5) FAIL_CHECK("d " << d << ", n " << n << ": got " << q << " r " << r << ", want " << n / d << " r " << n % d);
      }
    }
  }
  CHECK(wrong == 0);
  CHECK(checked > 4096 * 80);
}
