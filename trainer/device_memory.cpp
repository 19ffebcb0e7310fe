#include "trainer/device_memory.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#ifdef FP8RL_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace fp8rl::trainer {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Linux's peak resident set of this process (VmHWM in /proc/self/status), in bytes; 0 elsewhere.
double cpu_peak_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024.0;  // "VmHWM:  123 kB"
  return 0.0;
}

// Resets VmHWM to the current resident set; false where not allowed (no /proc, a sandbox).
bool reset_cpu_peak() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

}  // namespace

bool cpu_peak_is_per_phase() {
  static const bool ok = reset_cpu_peak();
  return ok;
}

void reset_peak_memory(at::Device device) {
#ifdef FP8RL_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
    return;
  }
#endif
  if (device.is_cpu() && cpu_peak_is_per_phase()) reset_cpu_peak();
}

#ifdef FP8RL_WITH_CUDA
namespace {

// The caching allocator's statistics of `device`, aggregated over its pools ([0]).
c10::CachingDeviceAllocator::DeviceStats cuda_stats(at::Device device) {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
}

}  // namespace
#endif

double peak_memory_gib(at::Device device) {
#ifdef FP8RL_WITH_CUDA
  if (device.is_cuda()) return static_cast<double>(cuda_stats(device).allocated_bytes[0].peak) / kGiB;
#endif
  return device.is_cpu() ? cpu_peak_bytes() / kGiB : 0.0;
}

double reserved_memory_gib(at::Device device) {
#ifdef FP8RL_WITH_CUDA
  if (device.is_cuda()) return static_cast<double>(cuda_stats(device).reserved_bytes[0].current) / kGiB;
#endif
  (void)device;
  return -1.0;
}

}  // namespace fp8rl::trainer
