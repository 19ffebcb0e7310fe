#include "tests/rollout/pdl_race_kernels.h"

#include <stdexcept>
#include <string>

namespace fp8rl::test {
namespace {

__global__ void late_copy_kernel(const uint8_t* src, uint8_t* dst, int64_t bytes, long long cycles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);  // the next kernel may launch now
#endif
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < bytes; i += stride) dst[i] = src[i];
}

}  // namespace

void late_copy(const void* src, void* dst, int64_t bytes, long long cycles, cudaStream_t stream) {
  late_copy_kernel<<<32, 256, 0, stream>>>(static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), bytes, cycles);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("late_copy_kernel: ") + cudaGetErrorString(e));
}

}  // namespace fp8rl::test
