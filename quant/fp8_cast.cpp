#include "quant/fp8_cast.h"

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/log.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "quant/cuda/fp8_cast_kernels.h"
#endif

namespace fp8rl {

at::ScalarType fp8_dtype(Fp8Format fmt) {
  return fmt == Fp8Format::e4m3 ? at::kFloat8_e4m3fn : at::kFloat8_e5m2;
}

namespace {

void check_inputs(const at::Tensor& x, float scale) {
  FP8RL_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              cat("quantize_per_tensor takes float32 or bfloat16, got ", x.scalar_type()));
  FP8RL_CHECK(std::isfinite(scale) && scale > 0, cat("scale must be finite and > 0, got ", scale));
}

}  // namespace

at::Tensor quantize_per_tensor_reference(const at::Tensor& x, float scale, Fp8Format fmt) {
  check_inputs(x, scale);
  at::Tensor xf = x.to(at::kCPU, at::kFloat).contiguous();  // bf16 -> fp32 is exact
  at::Tensor out = at::empty(xf.sizes(), at::TensorOptions().dtype(fp8_dtype(fmt)));
  const float* src = xf.data_ptr<float>();
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  const int64_t n = xf.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_fp8(src[i] / scale, fmt);
  return out;
}

at::Tensor quantize_per_tensor(const at::Tensor& x, float scale, Fp8Format fmt) {
  check_inputs(x, scale);
  if (x.numel() > 0 && !at::isfinite(x).all().item<bool>())
    throw RuntimeFailure(cat("quantize_per_tensor: input of shape ", x.sizes(), " holds NaN or inf"));
  if (x.device().is_cpu()) return quantize_per_tensor_reference(x, scale, fmt);
#ifdef FP8RL_WITH_CUDA
  FP8RL_CHECK(x.device().is_cuda(), cat("unsupported device ", x.device()));
  at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty(xc.sizes(), xc.options().dtype(fp8_dtype(fmt)));
  cuda::quantize_per_tensor(xc.data_ptr(), xc.scalar_type() == at::kBFloat16, static_cast<uint8_t*>(out.data_ptr()),
                            xc.numel(), scale, fmt == Fp8Format::e5m2, at::cuda::getCurrentCUDAStream());
  return out;
#else
  throw RuntimeFailure(cat("quantize_per_tensor: tensor on ", x.device(), " but fp8rl was built without CUDA"));
#endif
}

}  // namespace fp8rl
