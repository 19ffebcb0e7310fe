#include "core/model/random_checkpoint.h"

#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/model/byte_tokenizer.h"
#include "core/model/architecture.h"
#include "core/model/model_config.h"
#include "core/hf/safetensors.h"

namespace fp8rl::model {

namespace {

// A generator of its own (not the process's default one), seeded with `seed`. CPU: the
// mt19937 generator random checkpoints always used (same seed, same file as before). CUDA: a
// clone of the device's default Philox generator, reseeded: no CUDA header needed here.
at::Generator seeded_generator(at::Device device, uint64_t seed) {
  if (device.is_cpu()) return at::make_generator<at::CPUGeneratorImpl>(seed);
  if (!device.is_cuda()) throw ConfigError(cat("write_random_checkpoint: device ", device.str(), ": expected cpu or cuda"));
  if (!at::hasCUDA())
    throw ConfigError("write_random_checkpoint: device cuda, but this build of fp8rl has no CUDA or no GPU is visible");
  at::Generator gen = at::globalContext().defaultGenerator(device).clone();
  gen.set_current_seed(seed);
  return gen;
}

}  // namespace

void store_bf16(const TensorSpec& spec, const at::Tensor& value, std::vector<safetensors::TensorToWrite>& out,
                std::vector<at::Tensor>& storage) {
  storage.push_back(value.to(at::kBFloat16).to(at::kCPU).contiguous());
  const at::Tensor& d = storage.back();
  out.push_back({spec.name, safetensors::Dtype::BF16, spec.shape, d.data_ptr(), static_cast<size_t>(d.nbytes())});
}

void write_random_checkpoint(const std::string& out_dir, const std::string& arch, const hf::ModelShape& shape,
                             uint64_t seed, at::Device device, const StoreRandomTensor& store) {
  const ModelConfig config = default_model_config(parse_family(arch, "write_random_checkpoint"), shape);
  // Round-trip through the parser so a shape it would refuse (odd head_dim, heads not a multiple
  // of KV heads, ...) is refused here rather than in whoever loads the checkpoint.
  const std::string config_json = model_config_to_json(config);
  parse_model_config(config_json, out_dir + "/config.json");
  at::Generator gen = seeded_generator(device, seed);

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw RuntimeFailure(cat(out_dir, ": cannot create directory: ", ec.message()));

  const std::vector<TensorSpec> specs = checkpoint_tensors(config);
  std::vector<at::Tensor> storage;  // keeps the bytes alive until write_file returns
  std::vector<safetensors::TensorToWrite> tensors;
  storage.reserve(2 * specs.size());  // a store may keep two host tensors per spec (FP8: data + scales)
  tensors.reserve(2 * specs.size());
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  for (const TensorSpec& spec : specs) {
    at::Tensor t;  // [spec.shape] float32 on `device`; dropped after the store, so one is alive at a time
    switch (spec.init) {
      case TensorSpec::normal: t = at::normal(0.0, 0.02, spec.shape, gen, f32); break;
      case TensorSpec::ones: t = at::ones(spec.shape, f32); break;
      case TensorSpec::zeros: t = at::zeros(spec.shape, f32); break;
    }
    store(spec, t, tensors, storage);
  }
  const std::string config_path = out_dir + "/config.json";
  std::ofstream out(config_path, std::ios::trunc);
  out << config_json;
  out.close();
  if (!out) throw RuntimeFailure(cat(config_path, ": write failed"));
  // Test-sized vocabularies (below 256 bytes + specials) cannot hold a byte-level tokenizer: the
  // checkpoint is then written without tokenizer files.
  if (shape.vocab_size >= byte_tokenizer_size(config.family))
    write_byte_tokenizer(out_dir, config.family);
  else
    log::warn(cat("vocab_size ", shape.vocab_size, " < ", byte_tokenizer_size(config.family),
                  ": writing no tokenizer files to ", out_dir));
  // The weights last (safetensors::write_file renames them into place): their file stands for a
  // whole checkpoint, so a run killed while this wrote makes its init_model again at the next start.
  safetensors::write_file(out_dir + "/model.safetensors", tensors, {{"format", "pt"}});
  log::debug(cat("wrote random ", arch, " checkpoint (", shape.num_hidden_layers, " layers, hidden ",
                shape.hidden_size, ", seed ", seed, ") to ", out_dir));
}

}  // namespace fp8rl::model
