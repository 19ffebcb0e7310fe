// rollout/key_order.h, the paged decode kernel's order of an FP8 cache's head dims in its scores
// MMA, on the CPU: that it is a permutation (so q . k is the same sum), that a lane's words are
// whole 16-byte chunks of a row (what load_key_words reads), and that one 16-byte load of the 8
// lanes a shared-memory phase serves hits distinct banks in both of the kernel's row layouts.
#include "rollout/key_order.h"

#include <set>
#include <vector>

#include "tests/catch.h"

using namespace fp8rl::rollout;

namespace {

// The dims of every (lane t, step kk, element j), in the kernel's order.
template <int D>
std::vector<int> order() {
  std::vector<int> dims;
  for (int t = 0; t < 4; ++t)
    for (int kk = 0; kk < D / 16; ++kk)
      for (int j = 0; j < 4; ++j) dims.push_back(key_dim<D>(t, kk) + j);
  return dims;
}

template <int D>
void check_permutation() {
  const std::vector<int> dims = order<D>();
  const std::set<int> seen(dims.begin(), dims.end());
  INFO("head_dim " << D);
  CHECK(dims.size() == static_cast<size_t>(D));
  CHECK(seen.size() == static_cast<size_t>(D));
  CHECK(*seen.begin() == 0);
  CHECK(*seen.rbegin() == D - 1);
}

// Lane t's words kk = 4c .. 4c + 3 are one aligned 16-byte chunk (head_dim >= 64), or its D / 16
// words are contiguous from an aligned start (16 and 32).
template <int D>
void check_chunks() {
  INFO("head_dim " << D);
  for (int t = 0; t < 4; ++t) {
    if (D >= 64) {
      for (int c = 0; c < D / 64; ++c) {
        CHECK(key_dim<D>(t, 4 * c) % 16 == 0);
        for (int i = 1; i < 4; ++i) CHECK(key_dim<D>(t, 4 * c + i) == key_dim<D>(t, 4 * c) + 4 * i);
      }
    } else {
      CHECK(key_dim<D>(t, 0) % (D / 4) == 0);
      for (int kk = 1; kk < D / 16; ++kk) CHECK(key_dim<D>(t, kk) == key_dim<D>(t, 0) + 4 * kk);
    }
  }
}

// One 16-byte load (chunk c of each lane) by the 8 lanes of a phase: rows r and r + 1, lanes
// t = 0..3 each. Byte offsets in shared memory of an FP8 cache's stage: padded rows (stride D + 16)
// or, at head_dim 128, unpadded rows with chunk k of row r stored at chunk k ^ (r % 8). Distinct
// 16-byte slots modulo 128 bytes (32 four-byte banks) means no bank conflict.
template <int D>
void check_banks(bool swizzled) {
  INFO("head_dim " << D << (swizzled ? ", swizzled" : ", padded"));
  for (int r = 0; r < 64; r += 2)
    for (int c = 0; c < D / 64; ++c) {
      std::set<int> slots;
      for (int row = r; row < r + 2; ++row)
        for (int t = 0; t < 4; ++t) {
          const int e = key_dim<D>(t, 4 * c);
          const int at = swizzled ? row * D + ((e / 16) ^ (row % 8)) * 16 : row * (D + 16) + e;
          slots.insert((at % 128) / 16);
        }
      CHECK(slots.size() == 8);
    }
}

}  // namespace

TEST_CASE("paged decode key order: each head dim once, a lane's words whole 16-byte chunks", "[rollout][decode]") {
  check_permutation<16>();
  check_permutation<32>();
  check_permutation<64>();
  check_permutation<128>();
  check_permutation<256>();
  check_chunks<16>();
  check_chunks<32>();
  check_chunks<64>();
  check_chunks<128>();
  check_chunks<256>();
}

TEST_CASE("paged decode key order: a phase's 16-byte loads hit distinct banks from head_dim 128 up", "[rollout][decode]") {
  check_banks<128>(false);
  check_banks<128>(true);
  check_banks<256>(false);
}
