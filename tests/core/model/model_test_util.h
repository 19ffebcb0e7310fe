// Helpers for the model tests: closeness as max |got - ref| - (atol + rtol*|ref|), safetensors
// tensors as ATen tensors, a tiny shape.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "core/util/error.h"
#include "core/hf/config.h"
#include "core/model/weight_reader.h"
#include "core/hf/safetensors.h"
#include "tests/catch.h"

namespace fp8rl::test {

// Largest violation of |got - ref| <= atol + rtol * |ref| (<= 0 means all within), in double.
inline double worst_excess(const at::Tensor& got, const at::Tensor& ref, double atol, double rtol) {
  const at::Tensor g = got.detach().to(at::kCPU, at::kDouble), r = ref.detach().to(at::kCPU, at::kDouble);
  return ((g - r).abs() - (atol + rtol * r.abs())).max().item<double>();
}
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.detach().to(at::kCPU, at::kDouble) - b.detach().to(at::kCPU, at::kDouble)).abs().max().item<double>();
}

// A copy of one tensor of a safetensors file, in its stored dtype.
inline at::Tensor read_tensor(const safetensors::File& file, const std::string& name) {
  return model::to_host_tensor(file.get(name));
}

// Awkward sizes on purpose: GQA 3:1, head_dim 8, intermediate not a power of two.
inline hf::ModelShape tiny_shape(bool tied) {
  hf::ModelShape s;
  s.vocab_size = 97;
  s.hidden_size = 48;
  s.intermediate_size = 72;
  s.num_hidden_layers = 2;
  s.num_attention_heads = 6;
  s.num_key_value_heads = 2;
  s.head_dim = 8;
  s.tie_word_embeddings = tied;
  return s;
}

}  // namespace fp8rl::test
