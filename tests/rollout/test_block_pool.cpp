// The KV block pool: allocation, reference counts, the free queue, prefix caching and its reset.
// Awkward sizes on purpose (7 blocks of 5 tokens): nothing here may assume powers of two.
#include <algorithm>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

#include "rollout/block_pool.h"
#include "tests/catch.h"

using namespace fp8rl::rollout;

namespace {

std::vector<TokenId> toks(int32_t start, int32_t n) {
  std::vector<TokenId> t(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = start + i;
  return t;
}

}  // namespace

TEST_CASE("block pool: allocate until empty, free, all blocks distinct", "[rollout][block_pool]") {
  BlockPool pool(7, 5, true);
  std::set<BlockId> got;
  for (int i = 0; i < 7; ++i) {
    auto b = pool.allocate();
    REQUIRE(b.has_value());
    REQUIRE(pool.ref_count(*b) == 1);
    got.insert(*b);
  }
  REQUIRE(got.size() == 7);
  REQUIRE(pool.num_free_blocks() == 0);
  REQUIRE_FALSE(pool.allocate().has_value());  // out of blocks is a value, not a throw
  REQUIRE_FALSE(pool.allocate(1).has_value());
  pool.check_invariants();
  for (BlockId b : got) pool.free(b);
  REQUIRE(pool.num_free_blocks() == 7);
  REQUIRE(pool.stats().num_used == 0);
  pool.check_invariants();
}

TEST_CASE("block pool: allocate(n) is all or nothing", "[rollout][block_pool]") {
  BlockPool pool(7, 5, false);
  auto a = pool.allocate(4);
  REQUIRE(a.has_value());
  REQUIRE(a->size() == 4);
  REQUIRE_FALSE(pool.allocate(4).has_value());
  REQUIRE(pool.num_free_blocks() == 3);  // the failed call took nothing
  auto b = pool.allocate(3);
  REQUIRE(b.has_value());
  REQUIRE(pool.num_free_blocks() == 0);
  REQUIRE(pool.allocate(0).has_value());
  pool.free_all(*a);
  pool.free_all(*b);
  REQUIRE(pool.num_free_blocks() == 7);
  pool.check_invariants();
}

TEST_CASE("block pool: misuse is a checked programming error", "[rollout][block_pool]") {
  BlockPool pool(3, 4, true);
  REQUIRE_THROWS_AS(pool.free(0), std::logic_error);   // never allocated
  REQUIRE_THROWS_AS(pool.free(3), std::logic_error);   // out of range
  REQUIRE_THROWS_AS(pool.ref_count(-1), std::logic_error);
  auto b = *pool.allocate();
  pool.free(b);
  REQUIRE_THROWS_AS(pool.free(b), std::logic_error);   // double free
  auto c = *pool.allocate();
  const auto t3 = toks(0, 3);
  REQUIRE_THROWS_AS(pool.register_full_block(c, 1, t3), std::logic_error);  // partial blocks are never cached
  REQUIRE_THROWS_AS(pool.acquire_cached(c), std::logic_error);             // not cached
  REQUIRE_THROWS_AS(BlockPool(0, 4, true), std::logic_error);
  REQUIRE_THROWS_AS(BlockPool(4, 0, true), std::logic_error);
}

TEST_CASE("block pool: reference counts keep a shared block until its last holder frees it", "[rollout][block_pool]") {
  BlockPool pool(4, 5, true);
  const auto t = toks(10, 5);
  const BlockHash h = hash_block(kRootHash, t);
  BlockId b = *pool.allocate();
  REQUIRE(pool.register_full_block(b, h, t));
  // Three more samples of the same prompt find it.
  for (int i = 0; i < 3; ++i) {
    auto f = pool.find_cached(h, t);
    REQUIRE(f == b);
    pool.acquire_cached(*f);
  }
  REQUIRE(pool.ref_count(b) == 4);
  REQUIRE(pool.stats().prefix_hits == 3);
  REQUIRE(pool.stats().prefill_tokens_saved == 15);
  for (int i = 0; i < 3; ++i) pool.free(b);
  REQUIRE(pool.ref_count(b) == 1);
  REQUIRE(pool.num_free_blocks() == 3);
  pool.free(b);
  REQUIRE(pool.num_free_blocks() == 4);
  REQUIRE(pool.is_cached(b));  // free but still findable
  pool.check_invariants();
}

TEST_CASE("block pool: a freed cached block is revived by a hit, and evicted only when nothing else is free",
          "[rollout][block_pool]") {
  BlockPool pool(3, 5, true);
  const auto t = toks(1, 5);
  const BlockHash h = hash_block(kRootHash, t);
  BlockId cachedb = *pool.allocate();
  REQUIRE(pool.register_full_block(cachedb, h, t));
  pool.free(cachedb);
  // Two fresh allocations use the two uncached blocks, not the cached one.
  BlockId x = *pool.allocate(), y = *pool.allocate();
  REQUIRE(x != cachedb);
  REQUIRE(y != cachedb);
  REQUIRE(pool.is_cached(cachedb));
  // Revive: the hit takes it out of the free queue.
  auto f = pool.find_cached(h, t);
  REQUIRE(f == cachedb);
  pool.acquire_cached(cachedb);
  REQUIRE(pool.num_free_blocks() == 0);
  pool.free(cachedb);
  // Now the only free block is the cached one: allocate evicts it.
  BlockId z = *pool.allocate();
  REQUIRE(z == cachedb);
  REQUIRE_FALSE(pool.is_cached(z));
  REQUIRE_FALSE(pool.find_cached(h, t).has_value());
  REQUIRE(pool.stats().evictions == 1);
  pool.check_invariants();
}

TEST_CASE("block pool: chained hashes tell prefixes apart, token compare guards the lookup", "[rollout][block_pool]") {
  const auto a = toks(0, 6), b = toks(100, 6);
  const BlockHash ha = hash_block(kRootHash, a);
  REQUIRE(ha != hash_block(kRootHash, b));
  // Same block tokens after different parents: different hashes.
  REQUIRE(hash_block(ha, b) != hash_block(hash_block(kRootHash, b), b));
  REQUIRE(hash_block(ha, b) == hash_block(ha, b));

  BlockPool pool(4, 6, true);
  BlockId x = *pool.allocate();
  REQUIRE(pool.register_full_block(x, ha, a));
  REQUIRE_FALSE(pool.find_cached(ha, b).has_value());  // same hash, other tokens: a miss, never wrong K/V
  // A second block with the same content stays private (the first one is the cached copy).
  BlockId y = *pool.allocate();
  REQUIRE_FALSE(pool.register_full_block(y, ha, a));
  REQUIRE_FALSE(pool.is_cached(y));
  REQUIRE(pool.find_cached(ha, a) == x);
  pool.check_invariants();
}

TEST_CASE("block pool: prefix caching off never caches or hits", "[rollout][block_pool]") {
  BlockPool pool(4, 3, false);
  const auto t = toks(0, 3);
  BlockId x = *pool.allocate();
  REQUIRE_FALSE(pool.register_full_block(x, hash_block(kRootHash, t), t));
  REQUIRE_FALSE(pool.find_cached(hash_block(kRootHash, t), t).has_value());
  REQUIRE(pool.stats().num_cached == 0);
}

TEST_CASE("block pool: reset_prefix_cache forgets every prefix, held blocks stay held", "[rollout][block_pool]") {
  BlockPool pool(5, 4, true);
  std::vector<BlockId> held;
  BlockHash parent = kRootHash;
  for (int i = 0; i < 3; ++i) {
    const auto t = toks(4 * i, 4);
    parent = hash_block(parent, t);
    BlockId b = *pool.allocate();
    REQUIRE(pool.register_full_block(b, parent, t));
    held.push_back(b);
  }
  pool.free(held[2]);  // one free cached block, two held
  REQUIRE(pool.stats().num_cached == 3);
  pool.reset_prefix_cache();
  REQUIRE(pool.stats().num_cached == 0);
  REQUIRE(pool.ref_count(held[0]) == 1);
  REQUIRE(pool.ref_count(held[1]) == 1);
  REQUIRE(pool.num_free_blocks() == 3);
  REQUIRE_FALSE(pool.find_cached(hash_block(kRootHash, toks(0, 4)), toks(0, 4)).has_value());
  pool.check_invariants();
  // The same content can be cached again afterwards (new weights, new K/V).
  REQUIRE(pool.register_full_block(held[0], hash_block(kRootHash, toks(0, 4)), toks(0, 4)));
  pool.free(held[0]);
  pool.free(held[1]);
  REQUIRE(pool.num_free_blocks() == 5);
  pool.check_invariants();
}

TEST_CASE("block pool: random allocate, share, free keeps every invariant and leaks nothing", "[rollout][block_pool]") {
  std::mt19937 rng(1234);
  BlockPool pool(13, 3, true);
  std::vector<BlockId> held;  // one entry per reference
  for (int it = 0; it < 5000; ++it) {
    const int op = static_cast<int>(rng() % 4);
    if (op == 0) {
      if (auto b = pool.allocate()) {
        held.push_back(*b);
        const auto t = toks(static_cast<int32_t>(rng() % 5), 3);  // few contents: many duplicate hashes
        pool.register_full_block(*b, hash_block(kRootHash, t), t);
      } else {
        REQUIRE(pool.num_free_blocks() == 0);
      }
    } else if (op == 1 && !held.empty()) {
      const size_t i = rng() % held.size();
      pool.free(held[i]);
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
    } else if (op == 2) {
      const auto t = toks(static_cast<int32_t>(rng() % 5), 3);
      if (auto b = pool.find_cached(hash_block(kRootHash, t), t)) {
        pool.acquire_cached(*b);
        held.push_back(*b);
      }
    } else if (op == 3 && it % 500 == 0) {
      pool.reset_prefix_cache();
    }
    if (it % 50 == 0) pool.check_invariants();
    std::set<BlockId> distinct(held.begin(), held.end());
    REQUIRE(pool.num_free_blocks() == pool.num_blocks() - static_cast<int32_t>(distinct.size()));
  }
  for (BlockId b : held) pool.free(b);
  REQUIRE(pool.num_free_blocks() == 13);
  pool.check_invariants();
}
