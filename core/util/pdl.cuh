// The device side of programmatic dependent launch (core/util/pdl.h) and the launch that asks for
// it. Every kernel launched through pdl::launch must call pdl::begin() (or wait()) before its
// first read or write of global memory another kernel touches: that is what keeps an early start
// correct (the previous grid may still be running, or its writes not yet visible). Each of our
// kernels waits in every block before it lets the next grid launch (but see begin(bool)), so a
// kernel started early overlaps only the one kernel before it; CUTLASS's GEMMs (GDC) trigger
// earlier, before their epilogue. Without the attribute, or before sm_90, both calls do nothing.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "core/util/pdl.h"

namespace fp8rl::pdl {

// Blocks until the grids this one depends on have completed and their memory is visible.
__device__ __forceinline__ void wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next grid be launched once every block of this one has called it (or exited). Called
// right after wait(): the next grid's blocks then wait beside this grid's last wave. (Calling it
// only once the quantizing kernels had read their inputs, so that the batch-1 GEMV's early weight
// loads would not queue ahead of those reads, measured 0.989-0.999x at batch 1-128: H100,
// eleventh session.)
__device__ __forceinline__ void launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// The usual first statement of a kernel launched by launch(): wait for the previous grid, then let
// the next one launch.
__device__ __forceinline__ void begin() {
  wait();
  launch_dependents();
}

// begin(), or with trigger_first (pdl_early_trigger(), core/util/pdl.h) the other way round: the
// next grid may launch while the previous one still runs. Still correct: the next grid's wait
// returns only once this grid has completed, which is after this grid's own wait returned, so
// everything before this grid is done and visible as well; only what a kernel reads before its
// wait (the GEMV's weights) is read earlier. The next grid launches only once every block of this
// one has reached the trigger, i.e. is resident or done, so no grid in flight ever waits on a
// block that cannot be scheduled.
__device__ __forceinline__ void begin(bool trigger_first) {
  if (trigger_first) launch_dependents();
  wait();
  if (!trigger_first) launch_dependents();
}

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when pdl_enabled().
// Errors surface through cudaGetLastError(), as for <<<>>>.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = pdl_enabled() ? 1 : 0;
  (void)cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace fp8rl::pdl
