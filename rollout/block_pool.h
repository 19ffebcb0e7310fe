// The KV block pool: which fixed-size KV blocks exist, who holds them, and which hold a cached
// prefix. Host bookkeeping only: block ids index the engine's KV cache tensors (a later file),
// which this class never sees. No ATen, no CUDA, so it is unit-tested on the CPU.
//
// Blocks. The cache holds `num_blocks` blocks of `block_size` token slots each; token slot
// `offset` of block `b` is cache slot b * block_size + offset (what AttentionContext's
// slot_mapping holds). A sequence's block table lists its blocks in order: token position p
// lives in block table[p / block_size] at offset p % block_size.
//
// Reference counts. Every block has a count of the sequences whose table holds it. A block with
// count 0 is free: it sits in the free queue and may be handed out by allocate().
//
// Prefix caching (the sharing rule). Only FULL blocks are ever shared, and a full block is never
// written again (a sequence writes new K/V only at its own tail), so sharing needs no
// copy-on-write. A sequence's last, partial block is always private (count 1, never in the
// cache): the block where it appends. A full block is registered under a chained hash
//   hash_i = H(hash_{i-1}, tokens of block i),   hash_{-1} = kRootHash,
// so a hit on block i means the whole prefix 0..i matches (as vLLM and nano-vllm do). The map
// also keeps each cached block's token ids and a lookup compares them, so a 64-bit collision of
// the block's own tokens cannot hand out wrong K/V (a collision of the parent chain would need two
// colliding hashes in a row). When the last holder frees a cached block it stays in the cache
// while it waits in the free queue: a later sequence with the same prefix (a sibling sample, or
// a preempted sequence recomputing) revives it. allocate() evicts cached blocks only when no
// uncached free block is left, oldest-freed first.
//
// Recoverable states (no free block) are return values; misuse (freeing a free block, an id out
// of range) is FP8RL_CHECK.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace fp8rl::rollout {

using BlockId = int32_t;
using BlockHash = uint64_t;
using TokenId = int32_t;

inline constexpr BlockHash kRootHash = 0x9e3779b97f4a7c15ULL;  // parent of a sequence's first block

// The chained hash of one full block: its parent's hash and its token ids.
BlockHash hash_block(BlockHash parent, std::span<const TokenId> tokens);

struct BlockPoolStats {
  int32_t num_blocks = 0;
  int32_t num_free = 0;          // count 0 (includes cached blocks waiting for reuse)
  int32_t num_used = 0;          // count > 0
  int32_t num_cached = 0;        // registered in the prefix cache (used or free)
  int64_t prefix_queries = 0;    // find_cached() calls
  int64_t prefix_hits = 0;       // blocks taken from the cache (acquire_cached)
  int64_t prefill_tokens_saved = 0;  // prefix_hits * block_size: tokens whose K/V was not recomputed
  int64_t evictions = 0;         // cached blocks handed out as fresh ones
};

class BlockPool {
 public:
  // enable_prefix_caching = false: register_full_block() and find_cached() do nothing.
  BlockPool(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_.size()); }
  int32_t block_size() const { return block_size_; }
  bool prefix_caching() const { return prefix_caching_; }
  int32_t num_free_blocks() const { return num_free_; }
  int32_t ref_count(BlockId b) const;
  bool is_cached(BlockId b) const;

  // A fresh private block (count 1, not cached), or nullopt when every block is held. Takes an
  // uncached free block first; else evicts the least recently freed cached one.
  std::optional<BlockId> allocate();
  // `n` fresh blocks, all or nothing (nullopt, pool unchanged, when fewer than n are free).
  std::optional<std::vector<BlockId>> allocate(int32_t n);

  // Drops one reference; at 0 the block joins the free queue (keeping its cached content, if
  // any, until evicted).
  void free(BlockId b);
  // Frees a whole block table, tail first: the tail blocks of a table are the least likely to be
  // shared again, so they are queued to be evicted before its prefix.
  void free_all(std::span<const BlockId> table);

  // Prefix cache. find_cached() looks a full block up (no state change besides the query count);
  // acquire_cached() takes a reference on a found block, reviving it from the free queue.
  std::optional<BlockId> find_cached(BlockHash h, std::span<const TokenId> tokens);
  void acquire_cached(BlockId b);
  // Makes a held, full block findable under `h`. Returns false (and leaves it private) when the
  // cache already holds another block under that hash, or caching is off.
  bool register_full_block(BlockId b, BlockHash h, std::span<const TokenId> tokens);
  // Forgets every cached prefix (the weights changed, so cached K/V is stale). Held blocks stay
  // held by their sequences; they just cannot be found any more.
  void reset_prefix_cache();

  BlockPoolStats stats() const;

  // Every internal invariant (counts, free queue, cache map), for tests. Throws via FP8RL_CHECK.
  void check_invariants() const;

 private:
  void check_id(BlockId b) const;
  void queue_push_back(BlockId b);
  void queue_push_front(BlockId b);
  void queue_remove(BlockId b);
  void uncache(BlockId b);

  int32_t block_size_;
  bool prefix_caching_;
  std::vector<int32_t> ref_;
  // The free queue: an intrusive doubly linked list over block ids (-1 = none), so reviving a
  // cached block from its middle is O(1). Head = handed out next.
  std::vector<BlockId> prev_, next_;
  BlockId head_ = -1, tail_ = -1;
  int32_t num_free_ = 0;
  std::vector<bool> in_queue_;
  // Cache: hash -> block, and per block its hash and tokens while cached.
  std::unordered_map<BlockHash, BlockId> cached_;
  std::vector<std::optional<BlockHash>> block_hash_;
  std::vector<std::vector<TokenId>> block_tokens_;
  int64_t prefix_queries_ = 0, prefix_hits_ = 0, evictions_ = 0;
};

}  // namespace fp8rl::rollout
