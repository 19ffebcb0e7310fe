#include "core/model/weight_reader.h"

#include <cstring>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::model {

at::ScalarType aten_dtype(safetensors::Dtype dtype) {
  using D = safetensors::Dtype;
  switch (dtype) {
    case D::BOOL: return at::kBool;
    case D::U8: return at::kByte;
    case D::I8: return at::kChar;
    case D::I16: return at::kShort;
    case D::I32: return at::kInt;
    case D::I64: return at::kLong;
    case D::F16: return at::kHalf;
    case D::BF16: return at::kBFloat16;
    case D::F32: return at::kFloat;
    case D::F64: return at::kDouble;
    case D::F8_E4M3: return at::kFloat8_e4m3fn;
    case D::F8_E5M2: return at::kFloat8_e5m2;
  }
  FP8RL_CHECK(false, "aten_dtype: unknown safetensors dtype");
  return at::kByte;
}

at::Tensor to_host_tensor(const safetensors::TensorView& v) {
  at::Tensor host = at::empty(v.shape, at::TensorOptions().dtype(aten_dtype(v.dtype)));
  FP8RL_CHECK(static_cast<size_t>(host.nbytes()) == v.nbytes, "to_host_tensor: byte count disagrees with shape");
  if (v.nbytes) std::memcpy(host.data_ptr(), v.data, v.nbytes);
  return host;
}

at::Tensor WeightReader::dense(const std::string& name, std::span<const int64_t> shape) const {
  return dense(name, shape, dtype_);
}

at::Tensor WeightReader::dense(const std::string& name, std::span<const int64_t> shape, at::ScalarType dtype) const {
  const safetensors::TensorView& v = ckpt_.expect_shape(name, shape);
  using D = safetensors::Dtype;
  if (v.dtype != D::BF16 && v.dtype != D::F16 && v.dtype != D::F32)
    throw ConfigError(cat(ckpt_.file_of(name), ": tensor '", name, "' has dtype ", safetensors::dtype_name(v.dtype),
                          ", expected BF16, F16 or F32"));
  return to_host_tensor(v).to(at::TensorOptions().dtype(dtype).device(device_));
}

}  // namespace fp8rl::model
