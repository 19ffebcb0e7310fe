#include "rollout/block_pool.h"

#include <algorithm>
#include <string>

#include "core/util/error.h"

namespace fp8rl::rollout {

namespace {

// splitmix64's finalizer: a cheap, well-mixed 64-bit step. Not cryptographic; the cache compares
// the block's tokens on a hit anyway (block_pool.h).
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

BlockHash hash_block(BlockHash parent, std::span<const TokenId> tokens) {
  uint64_t h = mix(parent ^ (static_cast<uint64_t>(tokens.size()) << 32));
  for (TokenId t : tokens) h = mix(h ^ static_cast<uint32_t>(t));
  return h;
}

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching)
    : block_size_(block_size), prefix_caching_(enable_prefix_caching) {
  FP8RL_CHECK(num_blocks > 0, "a KV block pool needs at least one block, got " + std::to_string(num_blocks));
  FP8RL_CHECK(block_size > 0, "block_size must be > 0, got " + std::to_string(block_size));
  const auto n = static_cast<size_t>(num_blocks);
  ref_.assign(n, 0);
  prev_.assign(n, -1);
  next_.assign(n, -1);
  in_queue_.assign(n, false);
  block_hash_.assign(n, std::nullopt);
  block_tokens_.assign(n, {});
  for (BlockId b = 0; b < num_blocks; ++b) queue_push_back(b);  // fresh blocks go out in id order
}

void BlockPool::check_id(BlockId b) const {
  FP8RL_CHECK(b >= 0 && b < num_blocks(),
              "block id " + std::to_string(b) + " out of range [0, " + std::to_string(num_blocks()) + ")");
}

int32_t BlockPool::ref_count(BlockId b) const {
  check_id(b);
  return ref_[b];
}

bool BlockPool::is_cached(BlockId b) const {
  check_id(b);
  return block_hash_[b].has_value();
}

void BlockPool::queue_push_back(BlockId b) {
  prev_[b] = tail_;
  next_[b] = -1;
  if (tail_ >= 0) next_[tail_] = b; else head_ = b;
  tail_ = b;
  in_queue_[b] = true;
  ++num_free_;
}

void BlockPool::queue_push_front(BlockId b) {
  next_[b] = head_;
  prev_[b] = -1;
  if (head_ >= 0) prev_[head_] = b; else tail_ = b;
  head_ = b;
  in_queue_[b] = true;
  ++num_free_;
}

void BlockPool::queue_remove(BlockId b) {
  if (prev_[b] >= 0) next_[prev_[b]] = next_[b]; else head_ = next_[b];
  if (next_[b] >= 0) prev_[next_[b]] = prev_[b]; else tail_ = prev_[b];
  prev_[b] = next_[b] = -1;
  in_queue_[b] = false;
  --num_free_;
}

void BlockPool::uncache(BlockId b) {
  if (!block_hash_[b]) return;
  cached_.erase(*block_hash_[b]);
  block_hash_[b].reset();
  block_tokens_[b].clear();
}

std::optional<BlockId> BlockPool::allocate() {
  if (head_ < 0) return std::nullopt;
  const BlockId b = head_;
  queue_remove(b);
  if (block_hash_[b]) {  // only cached blocks were left: the oldest-freed one loses its content
    uncache(b);
    ++evictions_;
  }
  ref_[b] = 1;
  return b;
}

std::optional<std::vector<BlockId>> BlockPool::allocate(int32_t n) {
  FP8RL_CHECK(n >= 0, "allocate(n) with n = " + std::to_string(n));
  if (n > num_free_) return std::nullopt;
  std::vector<BlockId> out;
  out.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) out.push_back(*allocate());
  return out;
}

void BlockPool::free(BlockId b) {
  check_id(b);
  FP8RL_CHECK(ref_[b] > 0, "freeing block " + std::to_string(b) + ", which is already free");
  if (--ref_[b] > 0) return;
  // Uncached blocks are reused first (nothing is lost by overwriting them); cached ones queue at
  // the back, so the cache keeps the most recently used prefixes longest (LRU).
  if (block_hash_[b]) queue_push_back(b); else queue_push_front(b);
}

void BlockPool::free_all(std::span<const BlockId> table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) free(*it);
}

std::optional<BlockId> BlockPool::find_cached(BlockHash h, std::span<const TokenId> tokens) {
  if (!prefix_caching_) return std::nullopt;
  ++prefix_queries_;
  const auto it = cached_.find(h);
  if (it == cached_.end()) return std::nullopt;
  const auto& stored = block_tokens_[it->second];
  if (!std::equal(stored.begin(), stored.end(), tokens.begin(), tokens.end())) return std::nullopt;
  return it->second;
}

void BlockPool::acquire_cached(BlockId b) {
  check_id(b);
  FP8RL_CHECK(block_hash_[b].has_value(), "acquire_cached on block " + std::to_string(b) + ", which is not cached");
  if (ref_[b] == 0) queue_remove(b);
  ++ref_[b];
  ++prefix_hits_;
}

bool BlockPool::register_full_block(BlockId b, BlockHash h, std::span<const TokenId> tokens) {
  check_id(b);
  FP8RL_CHECK(ref_[b] > 0, "registering free block " + std::to_string(b) + " in the prefix cache");
  FP8RL_CHECK(static_cast<int32_t>(tokens.size()) == block_size_,
              "only full blocks are cached: got " + std::to_string(tokens.size()) + " tokens, block_size " +
                  std::to_string(block_size_));
  if (!prefix_caching_ || block_hash_[b]) return false;
  if (!cached_.emplace(h, b).second) return false;  // an equal prefix is already cached elsewhere
  block_hash_[b] = h;
  block_tokens_[b].assign(tokens.begin(), tokens.end());
  return true;
}

void BlockPool::reset_prefix_cache() {
  for (BlockId b = 0; b < num_blocks(); ++b) {
    if (!block_hash_[b]) continue;
    uncache(b);
    if (in_queue_[b]) {  // now plain free blocks: to the front, reused before anything else
      queue_remove(b);
      queue_push_front(b);
    }
  }
}

BlockPoolStats BlockPool::stats() const {
  BlockPoolStats s;
  s.num_blocks = num_blocks();
  s.num_free = num_free_;
  s.num_used = num_blocks() - num_free_;
  s.num_cached = static_cast<int32_t>(cached_.size());
  s.prefix_queries = prefix_queries_;
  s.prefix_hits = prefix_hits_;
  s.prefill_tokens_saved = prefix_hits_ * block_size_;
  s.evictions = evictions_;
  return s;
}

void BlockPool::check_invariants() const {
  int32_t queued = 0;
  BlockId prev = -1;
  for (BlockId b = head_; b >= 0; b = next_[b]) {
    FP8RL_CHECK(queued < num_blocks(), "free queue has a cycle");
    FP8RL_CHECK(prev_[b] == prev, "free queue links broken at block " + std::to_string(b));
    FP8RL_CHECK(in_queue_[b] && ref_[b] == 0, "block " + std::to_string(b) + " queued but held");
    prev = b;
    ++queued;
  }
  FP8RL_CHECK(tail_ == prev, "free queue tail is wrong");
  FP8RL_CHECK(queued == num_free_, "free count " + std::to_string(num_free_) + " != queued " + std::to_string(queued));
  int32_t zero = 0, cached = 0;
  for (BlockId b = 0; b < num_blocks(); ++b) {
    FP8RL_CHECK(ref_[b] >= 0, "negative reference count");
    if (ref_[b] == 0) {
      ++zero;
      FP8RL_CHECK(in_queue_[b], "block " + std::to_string(b) + " has count 0 but is not in the free queue");
    }
    if (block_hash_[b]) {
      ++cached;
      const auto it = cached_.find(*block_hash_[b]);
      FP8RL_CHECK(it != cached_.end() && it->second == b, "cache map disagrees with block " + std::to_string(b));
      FP8RL_CHECK(static_cast<int32_t>(block_tokens_[b].size()) == block_size_, "cached block without its tokens");
    }
  }
  FP8RL_CHECK(zero == num_free_, "count-0 blocks != free blocks");
  FP8RL_CHECK(cached == static_cast<int32_t>(cached_.size()), "cache map has stale entries");
}

}  // namespace fp8rl::rollout
