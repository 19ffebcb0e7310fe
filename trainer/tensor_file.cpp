#include "trainer/tensor_file.h"

#include <vector>

#include "core/hf/safetensors.h"
#include "core/model/weight_reader.h"
#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::trainer {

namespace {

safetensors::Dtype stored_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return safetensors::Dtype::F32;
    case at::kBFloat16: return safetensors::Dtype::BF16;
    case at::kHalf: return safetensors::Dtype::F16;
    case at::kLong: return safetensors::Dtype::I64;
    case at::kInt: return safetensors::Dtype::I32;
    case at::kFloat8_e4m3fn: return safetensors::Dtype::F8_E4M3;
    case at::kFloat8_e5m2: return safetensors::Dtype::F8_E5M2;
    default: FP8RL_CHECK(false, cat("save_tensors: unsupported dtype ", t));
  }
  return safetensors::Dtype::F32;
}

}  // namespace

void save_tensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> host;  // keeps the bytes alive until written
  std::vector<safetensors::TensorToWrite> out;
  for (const auto& [name, t] : tensors) {
    host.push_back(t.detach().cpu().contiguous());
    const at::Tensor& h = host.back();
    out.push_back({name, stored_dtype(h.scalar_type()), h.sizes().vec(), h.data_ptr(), h.nbytes()});
  }
  safetensors::write_file(path, out, metadata);
}

std::map<std::string, at::Tensor> load_tensors(const std::string& path) {
  const safetensors::File file(path);
  std::map<std::string, at::Tensor> out;
  for (const safetensors::TensorView& v : file.tensors()) out[v.name] = model::to_host_tensor(v);
  return out;
}

}  // namespace fp8rl::trainer
