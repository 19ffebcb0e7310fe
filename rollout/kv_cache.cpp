#include "rollout/kv_cache.h"

#include <algorithm>

#include "core/util/error.h"
#include "core/util/log.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace fp8rl::rollout {

int64_t KvCacheShape::bytes_per_block() const {
  return 2 * num_layers * block_size * num_kv_heads * head_dim * static_cast<int64_t>(c10::elementSize(dtype));
}

KvCache::KvCache(const KvCacheShape& shape, int64_t num_blocks) : shape_(shape), num_blocks_(num_blocks) {
  FP8RL_CHECK(num_blocks > 0 && shape.num_layers > 0 && shape.block_size > 0, "KvCache: empty shape");
  const auto opts = at::TensorOptions().dtype(shape.dtype).device(shape.device);
  for (int64_t l = 0; l < shape.num_layers; ++l) {
    k_.push_back(at::zeros({num_blocks * shape.block_size, shape.num_kv_heads, shape.head_dim}, opts));
    v_.push_back(at::zeros({num_blocks * shape.block_size, shape.num_kv_heads, shape.head_dim}, opts));
  }
}

int64_t KvCache::blocks_that_fit(const KvCacheShape& shape, double utilization, int64_t max_blocks) {
  int64_t blocks = max_blocks;
  if (shape.device.is_cuda()) {
#ifdef FP8RL_WITH_CUDA
    const int64_t total = static_cast<int64_t>(at::cuda::getDeviceProperties(shape.device.index())->totalGlobalMem);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(shape.device.index());
    const int64_t allocated = stats.allocated_bytes[0].current;  // aggregate pool
    const int64_t budget = static_cast<int64_t>(utilization * static_cast<double>(total)) - allocated;
    const int64_t fit = std::max<int64_t>(0, budget / shape.bytes_per_block());
    blocks = max_blocks > 0 ? std::min(fit, max_blocks) : fit;
    if (blocks < 1)
      throw RuntimeFailure(cat("rollout.gpu_memory_utilization ", utilization, " leaves no room for the KV cache: ",
                               allocated >> 20, " MiB already allocated of ", total >> 20,
                               " MiB (raise it, or lower the model/trainer memory)"));
#else
    throw RuntimeFailure("KvCache: a CUDA device in a build without CUDA");
#endif
  }
  FP8RL_CHECK(blocks > 0, "KvCache::blocks_that_fit: no block count on the CPU");
  return blocks;
}

void KvCache::write(int64_t layer, const at::Tensor& slots, const at::Tensor& k, const at::Tensor& v) {
  k_[static_cast<size_t>(layer)].index_copy_(0, slots, k.to(shape_.dtype));
  v_[static_cast<size_t>(layer)].index_copy_(0, slots, v.to(shape_.dtype));
}

std::pair<at::Tensor, at::Tensor> KvCache::gather(int64_t layer, const at::Tensor& slots) const {
  return {k_[static_cast<size_t>(layer)].index_select(0, slots), v_[static_cast<size_t>(layer)].index_select(0, slots)};
}

void KvCache::release() {
  k_.clear();
  v_.clear();
  num_blocks_ = 0;
}

int64_t KvCache::nbytes() const { return num_blocks_ * shape_.bytes_per_block(); }

}  // namespace fp8rl::rollout
