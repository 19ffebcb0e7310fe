// Named tensors to and from one .safetensors file (checkpoints: adapters, masters, optimizer
// moments). Written atomically (safetensors::write_file); read back as CPU tensors in their
// stored dtype.
#pragma once

#include <map>
#include <string>

#include <ATen/ATen.h>

namespace fp8rl::trainer {

// Tensors of float32, bfloat16, float16, int64, int32 or float8 dtypes, on any device.
void save_tensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata = {});
// ConfigError naming the file when it is missing or malformed.
std::map<std::string, at::Tensor> load_tensors(const std::string& path);

}  // namespace fp8rl::trainer
