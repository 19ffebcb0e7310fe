// Peak device memory per phase of a step (CUDA's caching allocator statistics). CPU runs report
// 0: the process's heap is not what a GPU user sizes a run by.
#pragma once

#include <ATen/core/TensorBody.h>

namespace fp8rl::trainer {

void reset_peak_memory(at::Device device);
double peak_memory_gib(at::Device device);  // since the last reset; 0 on CPU

}  // namespace fp8rl::trainer
