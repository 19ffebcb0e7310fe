// Peak memory per phase of a step, on the device the step runs on:
//   CUDA  the caching allocator's peak of allocated bytes (what a GPU user sizes a run by);
//   CPU   the process's peak resident set (Linux VmHWM), reset by writing 5 to
//         /proc/self/clear_refs, so a phase's peak is the phase's own; where that reset is not
//         allowed the peak is the process's since its start (cpu_peak_is_per_phase() says which).
#pragma once

#include <ATen/core/TensorBody.h>

namespace fp8rl::trainer {

void reset_peak_memory(at::Device device);
double peak_memory_gib(at::Device device);  // since the last reset

// CUDA: what the caching allocator holds from the driver now, allocated or cached for reuse
// (it never gives memory back on its own, so this is also the process's high-water mark of
// allocator memory; the CUDA context and library workspaces outside the allocator are not in
// it). -1 on other devices.
double reserved_memory_gib(at::Device device);

// Whether the CPU peak can be reset (tried once per process).
bool cpu_peak_is_per_phase();

}  // namespace fp8rl::trainer
