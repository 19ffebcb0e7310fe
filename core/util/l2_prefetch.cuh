// The device side of core/util/l2_prefetch.h: one thread of each block issues the bulk prefetches
// of its share of the chunks (for_each_l2_chunk). cp.async.bulk.prefetch is fire-and-forget:
// nothing waits for the bytes, so the block's own work is not held up and it may exit before they
// arrive. Before sm_90 it does nothing.
#pragma once

#include <cstdint>

#include "core/util/l2_prefetch.h"

namespace fp8rl {

__device__ __forceinline__ void l2_prefetch_part(const L2Prefetch& p, int64_t part, int64_t parts) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  for_each_l2_chunk(p, part, parts, [](const char* address, int64_t bytes) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(address), "r"(static_cast<uint32_t>(bytes)) : "memory");
  });
#else
  (void)p, (void)part, (void)parts;
#endif
}

}  // namespace fp8rl
