// The data order: a permutation per epoch from (seed, epoch), batches that cross epochs without
// skipping or repeating, and restore() continuing exactly.
#include <algorithm>
#include <set>

#include "tests/catch.h"
#include "trainer/data.h"

using namespace fp8rl::trainer;

TEST_CASE("every epoch visits each example once, batches crossing the boundary", "[trainer][data]") {
  DataOrder order(10, 7, true);
  std::vector<int64_t> seen;
  for (int i = 0; i < 5; ++i) {
    const std::vector<int64_t> b = order.next(6);  // 30 draws: three epochs of 10
    seen.insert(seen.end(), b.begin(), b.end());
  }
  for (int e = 0; e < 3; ++e) {
    const std::set<int64_t> epoch(seen.begin() + e * 10, seen.begin() + (e + 1) * 10);
    CHECK(epoch.size() == 10);
  }
  CHECK_FALSE(std::equal(seen.begin(), seen.begin() + 10, seen.begin() + 10));  // reshuffled
  CHECK(order.epoch() == 2);
  CHECK(order.cursor() == 10);
}

TEST_CASE("restore continues the same stream, also from an epoch's end", "[trainer][data]") {
  DataOrder a(7, 3, true);
  a.next(5);
  a.next(2);  // exactly at the end of epoch 0
  DataOrder b(7, 3, true);
  b.restore(a.epoch(), a.cursor());
  for (int i = 0; i < 6; ++i) CHECK(a.next(3) == b.next(3));
}

TEST_CASE("without shuffling the order is the file's", "[trainer][data]") {
  DataOrder order(4, 1, false);
  CHECK(order.next(6) == std::vector<int64_t>{0, 1, 2, 3, 0, 1});
}
