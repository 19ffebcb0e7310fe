#include "trainer/device_memory.h"

#ifdef FP8RL_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace fp8rl::trainer {

void reset_peak_memory([[maybe_unused]] at::Device device) {
#ifdef FP8RL_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
}

double peak_memory_gib([[maybe_unused]] at::Device device) {
#ifdef FP8RL_WITH_CUDA
  if (device.is_cuda())
    return static_cast<double>(
               c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).allocated_bytes[0].peak) /
           (1024.0 * 1024.0 * 1024.0);
#endif
  return 0.0;
}

}  // namespace fp8rl::trainer
