// The device side of quant/l2_prefetch.h: the grid's threads take the heads' 128-byte lines in
// turn (adjacent threads, adjacent lines of a row) and ask L2 for each with one prefetch. Not
// the bulk prefetch (cp.async.bulk.prefetch, one instruction per row): its address lives in
// uniform registers, so ptxas loops over a warp's 32 lanes one at a time, ~30 cycles a row, which
// at batch 1 (a grid of 4 blocks) takes longer than the kernel. Call it first in a kernel, before
// pdl::wait(): it reads only weights, which no kernel of a decode step writes, and a prefetch
// has no result to order.
#pragma once

#include <cstdint>

#include "quant/l2_prefetch.h"

namespace fp8rl::cuda {

__device__ __forceinline__ void prefetch_l2(const quant::L2Prefetch& p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if (p.head_bytes <= 0) return;
  // 32-bit counters: the lines are at most the budget (FP8RL_WEIGHT_PREFETCH_MB <= 1024) / 128.
  const auto lines_per_row = static_cast<uint32_t>(p.head_bytes / quant::kL2Line);
  const auto lines = static_cast<uint32_t>(p.rows) * lines_per_row;
  const uint32_t threads = gridDim.x * gridDim.y * blockDim.x;
  for (uint32_t i = (blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x; i < lines; i += threads) {
    const uint32_t row = i / lines_per_row, line = i - row * lines_per_row;
    const char* a = static_cast<const char*>(p.base) + static_cast<int64_t>(row) * p.row_bytes + line * quant::kL2Line;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
  }
#else
  (void)p;
#endif
}

}  // namespace fp8rl::cuda
