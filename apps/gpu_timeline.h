// GPU activities that overlap in time, each credited with the part of its interval that no
// activity started before it covers. Why: with programmatic dependent launch (FP8RL_PDL) a kernel
// is launched before its predecessor ends and waits on the GPU (griddepcontrol.wait) until the
// predecessor's results are there, so the profiler's duration of the dependent kernel includes the
// predecessor's tail. Summed by kernel name, those durations count the same nanoseconds twice:
// on an H100 a decode step of 5.9 ms showed 10.3 ms of "GPU activity", and the quantization
// kernel after attention looked like 17% of the step. Credited this way, the durations add up to
// the time the GPU was busy (the union of the intervals), and a waiting kernel gets only the time
// after its predecessor ended. Plain C++ (no ATen), so its rules are tested on the CPU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace fp8rl {

struct GpuInterval {
  uint64_t start_ns = 0, end_ns = 0;
};

// exclusive[i]: the nanoseconds of v[i] not covered by an interval that starts earlier (or at the
// same time with a lower index). Their sum is the length of the union of the intervals. An
// interval that ends before it starts counts as empty.
inline std::vector<uint64_t> exclusive_ns(const std::vector<GpuInterval>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a].start_ns < v[b].start_ns; });
  std::vector<uint64_t> out(v.size(), 0);
  uint64_t covered = 0;  // the latest end among the intervals credited so far
  for (const size_t i : order) {
    const uint64_t from = std::max(v[i].start_ns, covered);
    if (v[i].end_ns > from) out[i] = v[i].end_ns - from;
    covered = std::max(covered, v[i].end_ns);
  }
  return out;
}

}  // namespace fp8rl
