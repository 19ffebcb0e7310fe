// Where a model's weights come from while it loads: the one safetensors -> ATen conversion, and
// the WeightReader that hands each piece of the model (and each LinearFactory) what it asks for.
//
// The decoder only ever asks for dense tensors in the model dtype. A factory that understands
// other encodings (quant/: FP8 data + block scales) reads them through checkpoint() and
// to_host_tensor(); the decoder never looks at a stored dtype, so checkpoint formats of quantized
// weights stay in quant/.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "core/hf/safetensors.h"

namespace fp8rl::model {

// The ATen dtype of a safetensors dtype (every one has one; F8_* map to ATen's float8 types).
at::ScalarType aten_dtype(safetensors::Dtype dtype);

// A CPU tensor holding a copy of the tensor's bytes, in its stored dtype. Copied rather than
// wrapped: a tensor's offset in the file need not be aligned to its element size, and the copy
// outlives the mapping.
at::Tensor to_host_tensor(const safetensors::TensorView& view);

class WeightReader {
 public:
  // `checkpoint` must outlive the reader.
  WeightReader(const safetensors::Checkpoint& checkpoint, at::ScalarType dtype, at::Device device, bool requires_grad)
      : ckpt_(checkpoint), dtype_(dtype), device_(device), requires_grad_(requires_grad) {}

  // Tensor `name` converted to the model dtype on the model device, shape checked against
  // `shape`. Throws ConfigError naming the file and tensor when it is missing, has another shape,
  // or is stored as anything but BF16, F16 or F32. Never marked requires_grad (the caller marks the
  // tensor it keeps, which for a fused projection is the concatenation).
  at::Tensor dense(const std::string& name, std::span<const int64_t> shape) const;
  // The same in `dtype` instead of the model's (full fine-tuning's FP32 masters: an F32 checkpoint
  // is then read without a round trip through BF16).
  at::Tensor dense(const std::string& name, std::span<const int64_t> shape, at::ScalarType dtype) const;

  bool contains(const std::string& name) const { return ckpt_.contains(name); }
  const safetensors::Checkpoint& checkpoint() const { return ckpt_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }
  // Whether the loaded model's dense tensors are trainable (LoadOptions::requires_grad).
  bool requires_grad() const { return requires_grad_; }

 private:
  const safetensors::Checkpoint& ckpt_;
  at::ScalarType dtype_;
  at::Device device_;
  bool requires_grad_;
};

}  // namespace fp8rl::model
