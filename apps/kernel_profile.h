// Where a GPU workload's time goes, kernel by kernel: runs `work` under LibTorch's Kineto
// profiler (CUPTI: the kernels' own start and end on the GPU, also those replayed from a CUDA
// graph) and sums the GPU activities (kernels, copies, memsets) by name: their own durations, and
// the time each adds to the GPU's busy time (under programmatic dependent launch a kernel starts
// before its predecessor ends and waits for it: apps/gpu_timeline.h). Used by
// `fp8rl bench rollout --profile` to say what one decode step spends its time on; the GPU machine
// has no Nsight Systems, and ncu times kernels one by one, serialized, not as a step runs them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace fp8rl {

struct KernelProfile {
  std::string table;        // Markdown: the `top` names by total time, per step, share of busy time
  double busy_ms = 0;       // sum of every GPU activity's duration (overlapping ones counted twice)
  double union_ms = 0;      // the time some GPU activity ran: overlaps counted once (gpu_timeline.h)
  double span_ms = 0;       // first start to last end (busy + idle gaps)
  int64_t activities = 0;   // GPU activities recorded
};

// `steps` divides the totals into per-step numbers (the caller knows how many steps `work` ran).
// On a machine whose profiler records no GPU activity (no CUPTI), activities is 0 and the table
// says so.
KernelProfile profile_kernels(const std::function<void()>& work, int64_t steps, int top = 25);

}  // namespace fp8rl
