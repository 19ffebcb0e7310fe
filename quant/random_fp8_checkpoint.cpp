#include "quant/random_fp8_checkpoint.h"

#include <set>

#include "core/model/architecture.h"
#include "core/model/random_checkpoint.h"
#include "quant/hf_fp8.h"
#include "quant/scaling.h"

namespace fp8rl::quant {

void write_random_fp8_checkpoint(const std::string& out_dir, const std::string& arch, const hf::ModelShape& shape,
                                 uint64_t seed, c10::Device device) {
  // The weights to quantize: every decoder projection's (its names do not depend on the bias switch).
  std::set<std::string> fp8_weights;
  for (const model::ProjectionSpec& p : model::decoder_projections(shape, /*qkv_bias=*/false))
    fp8_weights.insert(p.name + ".weight");
  const std::string suffix = ".weight";
  model::write_random_checkpoint(
      out_dir, arch, shape, seed, device,
      [&](const model::TensorSpec& spec, const at::Tensor& value, std::vector<safetensors::TensorToWrite>& out,
          std::vector<at::Tensor>& storage) {
        if (!fp8_weights.count(spec.name)) return model::store_bf16(spec, value, out, storage);
        // value [N, K] float32 on `device` -> E4M3 [N, K] + scale_inv [ceil(N/128), ceil(K/128)] on the host.
        // Plain amax / 448 scales (pow2 is a training option; a loaded weight keeps its stored scales).
        const Fp8Weight w = quantize_weight(value, WeightScaling::block, Fp8Format::e4m3, /*pow2=*/false, spec.name);
        const std::string module = spec.name.substr(0, spec.name.size() - suffix.size());
        for (safetensors::TensorToWrite& t : hf_fp8_tensors(module, w, storage)) out.push_back(std::move(t));
      });
  HfFp8Config config;  // E4M3, dynamic activations, 128x128 blocks: what quantize_weight wrote
  config.modules_to_not_convert = {"lm_head"};  // as export --fp8 lists its dense modules
  write_hf_fp8_config(out_dir, config);
}

}  // namespace fp8rl::quant
