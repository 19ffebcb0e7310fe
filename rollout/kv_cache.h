// The engine's KV cache: per decoder layer, K and V of every cache slot, where slot =
// block * block_size + offset (the scheduler's block pool hands out the blocks).
//
//   k[layer], v[layer]: [num_blocks * block_size, Hkv, D] in the KV dtype on the model device
//
// Sized when a rollout starts and released when it ends, so the update phase can use the memory
// (rollout and training take turns on the GPU). On CUDA the number of blocks comes from
// rollout.gpu_memory_utilization: the fraction of the device's total memory the process may
// reach, minus what the allocator already holds (weights, optimizer state, activations kept).
// KV dtype "auto" is the model dtype; an FP8 KV cache is the speed issue's work.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace fp8rl::rollout {

struct KvCacheShape {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 16;
  at::ScalarType dtype = at::kBFloat16;
  at::Device device = at::kCPU;
  int64_t bytes_per_block() const;  // K and V of every layer for one block
};

class KvCache {
 public:
  KvCache() = default;
  // Allocates num_blocks blocks (zero-filled: a kernel that over-reads a padding block sees
  // zeros, never stale NaN).
  KvCache(const KvCacheShape& shape, int64_t num_blocks);

  // Blocks that fit: on CUDA, (utilization * total device memory - memory the caching allocator
  // holds now) / bytes_per_block, capped at `max_blocks` when > 0; on the CPU `max_blocks`.
  // Throws RuntimeFailure naming rollout.gpu_memory_utilization when not one block fits.
  static int64_t blocks_that_fit(const KvCacheShape& shape, double utilization, int64_t max_blocks);

  // Writes this call's K/V: k, v [N, Hkv, D] into slots [N] of `layer`.
  void write(int64_t layer, const at::Tensor& slots, const at::Tensor& k, const at::Tensor& v);
  // K/V of the given slots of `layer`: [len(slots), Hkv, D] each.
  std::pair<at::Tensor, at::Tensor> gather(int64_t layer, const at::Tensor& slots) const;

  // Frees the tensors (and on CUDA returns the blocks to the caching allocator's free pool, which
  // the trainer's update then reuses).
  void release();
  bool allocated() const { return !k_.empty(); }
  int64_t num_blocks() const { return num_blocks_; }
  const KvCacheShape& shape() const { return shape_; }
  int64_t nbytes() const;

 private:
  KvCacheShape shape_;
  int64_t num_blocks_ = 0;
  std::vector<at::Tensor> k_, v_;  // per layer: [num_blocks * block_size, Hkv, D]
};

}  // namespace fp8rl::rollout
