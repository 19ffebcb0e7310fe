// A kernel for testing programmatic dependent launch (core/util/pdl.h): it lets the next kernel
// launch at once, then spins and only then writes its output, so a dependent kernel that read its
// input before griddepcontrol.wait would read the old bytes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fp8rl::test {

// dst[i] = src[i] for i < bytes, written after ~`cycles` clock cycles of spinning.
void late_copy(const void* src, void* dst, int64_t bytes, long long cycles, cudaStream_t stream);

}  // namespace fp8rl::test
