// Launchers of the FP8 cast kernels. Plain pointers only: no ATen in .cu files, so nvcc never
// parses torch's headers (build time) and the kernels are usable without LibTorch.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace fp8rl::cuda {

// out[i] = fp8(x[i] / scale), saturating, ties to even. x: n float32 or bfloat16 values.
// Bit-identical to quantize_per_tensor_reference (quant/fp8_cast.h).
void quantize_per_tensor(const void* x, bool x_is_bf16, uint8_t* out, int64_t n, float scale, bool e5m2,
                         cudaStream_t stream);

}  // namespace fp8rl::cuda
