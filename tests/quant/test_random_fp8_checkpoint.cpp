// `fp8rl init --fp8`: the random checkpoint in HF's FP8 format is the dense random checkpoint of
// the same seed with its projections rounded to E4M3 (same draws, same config and tokenizer), and
// the loader `train` and `generate` use runs it as stored.
#include <ATen/ATen.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/hf/safetensors.h"
#include "core/model/random_checkpoint.h"
#include "core/model/weight_reader.h"
#include "core/recipe/model_presets.h"
#include "core/util/error.h"
#include "quant/fp8_model.h"
#include "quant/hf_fp8.h"
#include "quant/random_fp8_checkpoint.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::quant;
using fp8rl::test::TempDir;

namespace {

// ||a - b|| / ||b|| in float64.
double rel_err(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  return (x - y).norm().item<double>() / y.norm().item<double>();
}

}  // namespace

TEST_CASE("init --fp8: the dense random model of the same seed, projections in HF's FP8 format", "[quant][random_fp8]") {
  TempDir tmp;
  const std::string dense = (tmp.path() / "dense").string(), fp8 = (tmp.path() / "fp8").string();
  const hf::ModelShape shape = *recipe::qwen3_preset("tiny");  // 4 layers, hidden 64: partial 128-blocks
  model::write_random_checkpoint(dense, "qwen3", shape, 7);
  write_random_fp8_checkpoint(fp8, "qwen3", shape, 7);

  // Same config (plus quantization_config) and tokenizer files.
  nlohmann::json cfg = nlohmann::json::parse(test::read_file(fp8 + "/config.json"));
  const nlohmann::json qc = cfg["quantization_config"];
  cfg.erase("quantization_config");
  CHECK(cfg == nlohmann::json::parse(test::read_file(dense + "/config.json")));
  CHECK(qc["quant_method"] == "fp8");
  CHECK(qc["fmt"] == "e4m3");
  CHECK(qc["activation_scheme"] == "dynamic");
  CHECK(qc["weight_block_size"] == nlohmann::json({128, 128}));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    INFO(f);
    CHECK(!test::read_file(dense + "/" + f).empty());
    CHECK(test::read_file(fp8 + "/" + f) == test::read_file(dense + "/" + f));
  }
  const std::optional<HfFp8Config> hc = read_hf_fp8_config(fp8);
  REQUIRE(hc.has_value());
  CHECK(hc->modules_to_not_convert == std::vector<std::string>{"lm_head"});

  // Every projection E4M3 + F32 scale_inv at HF's unpadded shapes, from the same draws as the
  // dense file (E4M3 keeps 3 mantissa bits: ~3% relative error; other draws would give ~140%).
  // Embeddings and norms are the dense file's BF16 bytes.
  const safetensors::Checkpoint a(dense), b(fp8);
  const std::string q = "model.layers.2.self_attn.q_proj", gate = "model.layers.2.mlp.gate_proj";
  CHECK(b.get(q + ".weight").dtype == safetensors::Dtype::F8_E4M3);
  CHECK(b.get(q + ".weight").shape == std::vector<int64_t>{64, 64});
  CHECK(b.get(q + ".weight_scale_inv").dtype == safetensors::Dtype::F32);
  CHECK(b.get(q + ".weight_scale_inv").shape == std::vector<int64_t>{1, 1});
  CHECK(b.get(gate + ".weight_scale_inv").shape == std::vector<int64_t>{2, 1});  // [192, 64]: ceil(192 / 128) row blocks
  for (const std::string& m : {q, gate, std::string("model.layers.0.mlp.down_proj")}) {
    INFO(m);
    const double e = rel_err(dequantize(load_hf_fp8_weight(b, m, at::kCPU)), model::to_host_tensor(a.get(m + ".weight")));
    CHECK(e > 0);
    CHECK(e < 0.05);
  }
  for (const char* n : {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.input_layernorm.weight"}) {
    INFO(n);
    CHECK(b.get(n).dtype == safetensors::Dtype::BF16);
    CHECK(at::equal(model::to_host_tensor(b.get(n)), model::to_host_tensor(a.get(n))));
  }

  // The loader of `train` / `generate` (quant_method: fp8) accepts it, uses all 4 x 7 projections
  // as stored, and computes the dense model's logits up to quantization error: about what the
  // dense file quantized at load gives (6.2% vs 5.6% here: the same E4M3 rounding of weights and
  // activations; the file's weights are rounded from float32, the dense file's from BF16).
  recipe::QuantizationConfig fp8q;  // fp8, E4M3, 128x128 blocks
  recipe::QuantizationConfig none;
  none.quant_method = "none";
  CHECK(check_model_dir(fp8, fp8q) == 28);
  REQUIRE_THROWS_CONTAINING(check_model_dir(fp8, none), ConfigError, "needs quantization.quant_method: fp8");
  model::LoadOptions opts;
  opts.dtype = at::kFloat;
  const at::Tensor ids =  // [1, 12]
      at::tensor(std::vector<int64_t>{72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100}, at::kLong).view({1, 12});
  const at::Tensor want = load_causal_lm(dense, none, opts).logits(ids);  // [1, 12, 512]
  const at::Tensor got = load_causal_lm(fp8, fp8q, opts).logits(ids);
  const double e = rel_err(got, want);
  const double e_load = rel_err(load_causal_lm(dense, fp8q, opts).logits(ids), want);
  INFO("relative error of the FP8 logits: " << e << "; of the dense file quantized at load: " << e_load);
  CHECK(e > 0);
  CHECK(e < 0.1);
  CHECK(e < 1.5 * e_load);
}

TEST_CASE("init --device cuda without CUDA is a ConfigError and writes nothing", "[quant][random_fp8]") {
  if (at::hasCUDA()) SKIP_TEST("a CUDA device is visible");
  TempDir tmp;
  const hf::ModelShape shape = *recipe::qwen3_preset("tiny");
  const at::Device cuda(at::kCUDA, 0);
  for (bool fp8 : {false, true}) {
    const std::filesystem::path out = tmp.path() / (fp8 ? "fp8" : "dense");
    if (fp8)
      REQUIRE_THROWS_CONTAINING(write_random_fp8_checkpoint(out.string(), "qwen3", shape, 0, cuda), ConfigError,
                                "no CUDA or no GPU is visible");
    else
      REQUIRE_THROWS_CONTAINING(model::write_random_checkpoint(out.string(), "qwen3", shape, 0, cuda), ConfigError,
                                "no CUDA or no GPU is visible");
    CHECK_FALSE(std::filesystem::exists(out));
  }
}
