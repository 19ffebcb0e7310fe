// Per-tensor FP8 quantization of a tensor: q = fp8(x / scale), saturating, ties to even.
//
// The first FP8 kernel of the project and its reference. The CPU path applies
// float_to_fp8 (fp8_format.h) element by element; the CUDA path (quant/cuda/fp8_cast.cu)
// must match it bit for bit. Block/channel/group scaling build on this (quant issue).
#pragma once

#include <ATen/core/Tensor.h>

#include "quant/fp8_format.h"

namespace fp8rl {

// x: any shape, float32 or bfloat16, CPU or CUDA. scale > 0 and finite.
// Returns a contiguous tensor of x's shape, dtype kFloat8_e4m3fn / kFloat8_e5m2, on x's device.
// Throws RuntimeFailure if x holds NaN or inf (a diverged model must not be silently cast).
at::Tensor quantize_per_tensor(const at::Tensor& x, float scale, Fp8Format fmt);

// The CPU reference, usable on any device's tensor (copies to CPU). No NaN check.
at::Tensor quantize_per_tensor_reference(const at::Tensor& x, float scale, Fp8Format fmt);

at::ScalarType fp8_dtype(Fp8Format fmt);

}  // namespace fp8rl
