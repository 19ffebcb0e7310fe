#include "trainer/export.h"

#include <unistd.h>

#include <filesystem>
#include <map>

#include "core/util/error.h"
#include "core/util/log.h"
#include "trainer/tensor_file.h"

namespace fp8rl::trainer {

namespace fs = std::filesystem;

void save_dense_model(const model::CausalLM& model, const std::string& source_dir, const std::string& out_dir) {
  std::map<std::string, at::Tensor> tensors;
  model.visit([&](const model::ModelTensor& t) {
    if (t.role == model::TensorRole::buffer) return;
    FP8RL_CHECK(t.role == model::TensorRole::trainable || t.role == model::TensorRole::frozen,
                cat("save_dense_model: ", t.name, " is not a dense tensor"));
    FP8RL_CHECK(t.name.find("lora_") == std::string::npos, cat("save_dense_model: adapters are not merged: ", t.name));
    model::for_each_hf_tensor(t, [&](const std::string& name, const at::Tensor& x) { tensors[name] = x; });
  });
  const fs::path out = fs::absolute(out_dir);
  const fs::path tmp = out.parent_path() / cat(".", out.filename().string(), ".tmp.", ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}) {
    const fs::path src = fs::path(source_dir) / f;
    if (fs::exists(src)) fs::copy_file(src, tmp / f);
  }
  save_tensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
  const fs::path old = out.parent_path() / cat(".", out.filename().string(), ".old.", ::getpid());
  if (fs::exists(out)) fs::rename(out, old);
  fs::rename(tmp, out);
  fs::remove_all(old, ec);
}

}  // namespace fp8rl::trainer
