// The engine's KV cache: per decoder layer, K and V of every cache slot, where slot =
// block * block_size + offset (the scheduler's block pool hands out the blocks).
//
//   k[layer], v[layer]: [num_blocks * block_size, Hkv, D] in the KV dtype on the model device
//
// Sized when a rollout starts and released when it ends, so the update phase can use the memory
// (rollout and training take turns on the GPU). On CUDA the number of blocks comes from
// rollout.gpu_memory_utilization: the fraction of the device's total memory the process may
// reach, minus what the allocator already holds (weights, optimizer state, activations kept).
//
// KV dtype (rollout.kv_cache_dtype): "auto" stores the model dtype. "fp8" stores E4M3 bytes
// (tensors of dtype uint8 holding E4M3 bit patterns: every op on them is a byte copy, and the
// kernels decode them) with one float32 scale per layer for K and one for V:
//   stored = e4m3(clamp(x / scale, -448, 448)),  x ~= float(stored) * scale.
// The scales are set by the first write of each layer in a rollout (the first prompts'
// prefill): scale = 2 * amax / 448, one binade of headroom above what the prompts showed;
// later values beyond it saturate. Per tensor, not per head or per block: one scalar read per
// attention call, the same for every block (a block is never rescaled, so prefix sharing and
// the decode graphs need nothing more), and the practice of vLLM's k_scale / v_scale. E4M3's 3
// mantissa bits give ~3% relative error per element whatever the scale; the scale only keeps
// values out of saturation and the subnormals. The price: a sample's tokens then depend on the
// rollout's first prefill chunk (through the scales), not only on its own seed. The mismatch it
// adds is what TIS corrects; tests bound it, and docs/EXPERIMENT.md ("Third run") measures it in
// training: k3 KL ~7e-3 against the BF16 trainer on a 76M model, ten times what FP8 weights add.
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
  at::ScalarType dtype = at::kBFloat16;  // the model dtype: what writes take and gathers return
  at::Device device = at::kCPU;
  bool fp8 = false;                      // store E4M3 bytes with per-layer scales (above)
  int64_t bytes_per_block() const;  // K and V of every layer for one block
};

class KvCache;

// A fixed place in device memory where a cache's addresses are, for CUDA graphs that outlive one
// cache. A graph bakes its kernels' arguments in, while the cache is made per rollout; so the
// kernels a graph captures (the KV writes, the paged decode kernel) take the address of this
// table and read the cache's per-layer K/V addresses from it, and the FP8 scales live here too.
// A KvCache made with a directory writes its addresses into it (stream-ordered, no host sync) and
// uses its scales: the graphs then read the new cache. One cache at a time per directory.
class KvDirectory {
 public:
  KvDirectory(int64_t num_layers, at::Device device);
  // Device [2]: the {K, V} addresses of `layer`'s cache (a kernel argument).
  void* const* bases(int64_t layer) const;
  int64_t num_layers() const { return bases_.size(0); }
  at::Device device() const { return bases_.device(); }

 private:
  friend class KvCache;
  at::Tensor bases_;   // [num_layers, 2] int64 on the device: K and V addresses per layer
  at::Tensor scales_;  // [num_layers, 2] float32 on the device: the FP8 scales (KvCache::k_scale)
};

class KvCache {
 public:
  KvCache() = default;
  // Allocates num_blocks blocks (zero-filled: a kernel that over-reads a padding block sees
  // zeros, never stale NaN). With `directory` (not owned; outlives the cache, its layers and
  // device the shape's) the cache's addresses go there and its FP8 scales are the directory's.
  KvCache(const KvCacheShape& shape, int64_t num_blocks, KvDirectory* directory = nullptr);

  // Blocks that fit: on CUDA, (utilization * total device memory - memory the caching allocator
  // holds now) / bytes_per_block, capped at `max_blocks` when > 0; on the CPU `max_blocks`.
  // Throws RuntimeFailure naming rollout.gpu_memory_utilization when not one block fits.
  // `held_bytes`: memory reserved outside the allocator's allocated bytes that must count as used
  // (a kept CUDA graph pool's idle memory, DecodeGraphs::pool_idle_bytes).
  static int64_t blocks_that_fit(const KvCacheShape& shape, double utilization, int64_t max_blocks,
                                 int64_t held_bytes = 0);

  // Writes this call's K/V: k, v [N, Hkv, D] into slots [N] of `layer` (FP8: the first write of
  // a layer sets its scales, on the device, without a host sync; on CUDA one fused kernel per
  // tensor quantizes and scatters, bit-exact with the ATen ops used elsewhere).
  void write(int64_t layer, const at::Tensor& slots, const at::Tensor& k, const at::Tensor& v);
  // K/V of the given slots of `layer`: [len(slots), Hkv, D] each, in the model dtype (FP8:
  // dequantized; on CUDA one kernel per tensor gathers and dequantizes, bit-exact with the ATen
  // ops of the CPU path).
  std::pair<at::Tensor, at::Tensor> gather(int64_t layer, const at::Tensor& slots) const;

  // The cache of one layer: [num_blocks * block_size, Hkv, D] (kernels that read block tables).
  const at::Tensor& k(int64_t layer) const { return k_[static_cast<size_t>(layer)]; }
  const at::Tensor& v(int64_t layer) const { return v_[static_cast<size_t>(layer)]; }
  // FP8: the layer's scales, float32 [1] each on the device (undefined otherwise).
  at::Tensor k_scale(int64_t layer) const;
  at::Tensor v_scale(int64_t layer) const;
  // Whether a kernel of the caller's may store `layer`'s K/V itself (model::qk_norm_rope_store)
  // with k_scale / v_scale: a cache of the model's dtype, or FP8 scales already set (the layer's
  // first write, which sets them, goes through write()).
  bool scales_set(int64_t layer) const { return !shape_.fp8 || calibrated_[static_cast<size_t>(layer)]; }
  // With a directory: device [2] {K, V} addresses of `layer` for kernels to read; else null.
  void* const* bases(int64_t layer) const { return directory_ ? directory_->bases(layer) : nullptr; }

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
  at::Tensor scales_;              // FP8: [num_layers, 2] float32 (K, V); the directory's when there is one
  KvDirectory* directory_ = nullptr;
  std::vector<bool> calibrated_;   // FP8: the layer's scales are set
};

}  // namespace fp8rl::rollout
