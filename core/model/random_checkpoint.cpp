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

void write_random_checkpoint(const std::string& out_dir, const std::string& arch, const hf::ModelShape& shape,
                             uint64_t seed) {
  const ModelConfig config = default_model_config(parse_family(arch, "write_random_checkpoint"), shape);
  // Round-trip through the parser so a shape it would refuse (odd head_dim, heads not a multiple
  // of KV heads, ...) is refused here rather than in whoever loads the checkpoint.
  const std::string config_json = model_config_to_json(config);
  parse_model_config(config_json, out_dir + "/config.json");

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw RuntimeFailure(cat(out_dir, ": cannot create directory: ", ec.message()));

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::vector<TensorSpec> specs = checkpoint_tensors(config);
  std::vector<at::Tensor> data;  // keeps the bytes alive until write_file returns
  std::vector<safetensors::TensorToWrite> tensors;
  data.reserve(specs.size());
  tensors.reserve(specs.size());
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (const TensorSpec& spec : specs) {
    at::Tensor t;
    switch (spec.init) {
      case TensorSpec::normal: t = at::normal(0.0, 0.02, spec.shape, gen, f32); break;
      case TensorSpec::ones: t = at::ones(spec.shape, f32); break;
      case TensorSpec::zeros: t = at::zeros(spec.shape, f32); break;
    }
    data.push_back(t.to(at::kBFloat16).contiguous());
    const at::Tensor& d = data.back();
    tensors.push_back({spec.name, safetensors::Dtype::BF16, spec.shape, d.data_ptr(), static_cast<size_t>(d.nbytes())});
  }
  safetensors::write_file(out_dir + "/model.safetensors", tensors, {{"format", "pt"}});

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
  log::debug(cat("wrote random ", arch, " checkpoint (", shape.num_hidden_layers, " layers, hidden ",
                shape.hidden_size, ", seed ", seed, ") to ", out_dir));
}

}  // namespace fp8rl::model
