#include "quant/hf_fp8.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "core/util/atomic_file.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/model/weight_reader.h"

namespace fp8rl::quant {

std::optional<HfFp8Config> read_hf_fp8_config(const std::string& model_dir) {
  const std::string file = (std::filesystem::path(model_dir) / "config.json").string();
  std::ifstream in(file);
  if (!in) throw ConfigError(cat(file, ": cannot open"));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError(cat(file, ": not valid JSON: ", e.what()));
  }
  auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return std::nullopt;
  const nlohmann::json& q = *it;
  auto str = [&](const char* key, const char* fallback) {
    auto k = q.find(key);
    if (k == q.end()) return std::string(fallback);
    if (!k->is_string()) throw ConfigError(cat(file, ": quantization_config.", key, " must be a string"));
    return k->get<std::string>();
  };
  const std::string method = str("quant_method", "");
  if (method != "fp8")
    throw ConfigError(cat(file, ": quantization_config.quant_method is '", method,
                          "'; fp8rl loads only FP8 checkpoints (fp8) or unquantized ones"));
  HfFp8Config c;
  c.fmt = str("fmt", "e4m3");
  c.activation_scheme = str("activation_scheme", "dynamic");
  if (c.fmt != "e4m3") throw ConfigError(cat(file, ": quantization_config.fmt is '", c.fmt, "'; expected e4m3"));
  if (c.activation_scheme != "dynamic")
    throw ConfigError(cat(file, ": quantization_config.activation_scheme is '", c.activation_scheme,
                          "'; fp8rl computes activation scales dynamically (expected dynamic)"));
  if (auto b = q.find("weight_block_size"); b != q.end() && !b->is_null()) {
    try {
      c.weight_block_size = b->get<std::vector<int64_t>>();
    } catch (const nlohmann::json::exception&) {
      throw ConfigError(cat(file, ": quantization_config.weight_block_size must be a list of integers"));
    }
    if (c.weight_block_size != std::vector<int64_t>{128, 128})
      throw ConfigError(cat(file, ": quantization_config.weight_block_size must be [128, 128]"));
  }
  if (auto m = q.find("modules_to_not_convert"); m != q.end() && m->is_array())
    for (const auto& name : *m)
      if (name.is_string()) c.modules_to_not_convert.push_back(name.get<std::string>());
  return c;
}

namespace {

// model_dir/config.json read, changed by `edit`, written back atomically.
void edit_config_json(const std::string& model_dir, const std::function<void(nlohmann::json&)>& edit) {
  const std::filesystem::path file = std::filesystem::path(model_dir) / "config.json";
  std::ifstream in(file);
  if (!in) throw RuntimeFailure(cat(file.string(), ": cannot open"));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw RuntimeFailure(cat(file.string(), ": not valid JSON: ", e.what()));
  }
  edit(j);
  write_file_atomic(file, j.dump(2) + "\n");
}

}  // namespace

void write_hf_fp8_config(const std::string& model_dir, const HfFp8Config& config) {
  edit_config_json(model_dir, [&](nlohmann::json& j) {
    j["quantization_config"] = {{"quant_method", "fp8"},
                                {"fmt", config.fmt},
                                {"activation_scheme", config.activation_scheme},
                                {"weight_block_size", config.weight_block_size},
                                {"modules_to_not_convert", config.modules_to_not_convert}};
  });
}

void drop_hf_quantization_config(const std::string& model_dir) {
  edit_config_json(model_dir, [](nlohmann::json& j) { j.erase("quantization_config"); });
}

namespace {

const safetensors::TensorView& get_typed(const safetensors::Checkpoint& ckpt, const std::string& name,
                                         safetensors::Dtype want) {
  const safetensors::TensorView& t = ckpt.get(name);  // throws ConfigError naming the checkpoint if missing
  if (t.dtype != want || t.shape.size() != 2)
    throw ConfigError(cat(ckpt.file_of(name), ": tensor '", name, "' is ", safetensors::dtype_name(t.dtype), " ",
                          safetensors::shape_str(t.shape), "; expected 2-D ", safetensors::dtype_name(want)));
  return t;
}

}  // namespace

Fp8Weight load_hf_fp8_weight(const safetensors::Checkpoint& ckpt, const std::string& module, at::Device device) {
  const std::string wname = module + ".weight", sname = module + ".weight_scale_inv";
  const auto& w = get_typed(ckpt, wname, safetensors::Dtype::F8_E4M3);
  const int64_t N = w.shape[0], K = w.shape[1];
  const int64_t nb = (N + kFp8Block - 1) / kFp8Block, kb = (K + kFp8Block - 1) / kFp8Block;
  if (!ckpt.contains(sname))
    throw ConfigError(cat(ckpt.file_of(wname), ": FP8 tensor '", wname, "' has no '", sname, "' beside it"));
  const std::vector<int64_t> sshape{nb, kb};
  const auto& s = ckpt.expect_shape(sname, sshape);
  if (s.dtype != safetensors::Dtype::F32)
    throw ConfigError(cat(ckpt.file_of(sname), ": tensor '", sname, "' is ", safetensors::dtype_name(s.dtype),
                          "; expected F32"));
  const int64_t Np = round_up(N, kFp8Block), Kp = padded_k(K, true);
  // Host copies (a tensor's offset in the file need not be aligned for float reads), then into
  // the padded layout.
  const at::Tensor q = model::to_host_tensor(w).view(at::kByte);  // [N, K]
  const at::Tensor sc = model::to_host_tensor(s);                  // [nb, kb] float32
  at::Tensor data = at::zeros({Np, Kp}, at::kByte);
  data.narrow(0, 0, N).narrow(1, 0, K).copy_(q);
  at::Tensor scale = at::ones({Np / kFp8Block, Kp / kFp8Block}, at::kFloat);
  scale.narrow(0, 0, nb).narrow(1, 0, kb).copy_(sc);
  return Fp8Weight{data.view(at::kFloat8_e4m3fn).to(device), scale.to(device), N, K, Fp8Format::e4m3,
                   WeightScaling::block};
}

std::pair<at::Tensor, at::Tensor> hf_fp8_pair(const Fp8Weight& w) {
  FP8RL_CHECK(w.scaling == WeightScaling::block && w.fmt == Fp8Format::e4m3,
              "hf_fp8_tensors: HF's FP8 layout is E4M3 with 128x128 block scales");
  const int64_t N = w.out_features, K = w.in_features;
  const int64_t nb = (N + kFp8Block - 1) / kFp8Block, kb = (K + kFp8Block - 1) / kFp8Block;
  return {w.data.narrow(0, 0, N).narrow(1, 0, K).to(at::kCPU).contiguous(),
          w.scale.narrow(0, 0, nb).narrow(1, 0, kb).to(at::kCPU).contiguous()};
}

std::vector<safetensors::TensorToWrite> hf_fp8_tensors(const std::string& module, const Fp8Weight& w,
                                                       std::vector<at::Tensor>& storage) {
  auto [data, s] = hf_fp8_pair(w);
  const at::Tensor q = data.view(at::kByte);
  const int64_t N = q.size(0), K = q.size(1), nb = s.size(0), kb = s.size(1);
  storage.push_back(q);
  storage.push_back(s);
  return {{module + ".weight", safetensors::Dtype::F8_E4M3, {N, K}, q.data_ptr(), static_cast<size_t>(q.numel())},
          {module + ".weight_scale_inv", safetensors::Dtype::F32, {nb, kb}, s.data_ptr(),
           static_cast<size_t>(s.numel()) * 4}};
}

}  // namespace fp8rl::quant
