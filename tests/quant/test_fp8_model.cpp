// FP8 inside the model: the HF-parity Qwen3 fixture loaded with the FP8 factory keeps the planned
// BF16 layers dense, holds no BF16 copy of the quantized ones, and its logits stay close to HF's
// (the distance is E4M3 quantization error, measured against the dense model's own distance).
#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/hf/config.h"
#include "core/model/decoder.h"
#include "core/model/random_checkpoint.h"
#include "core/model/weight_reader.h"
#include "core/hf/safetensors.h"
#include "core/util/error.h"
#include "quant/fp8_model.h"
#include "quant/hf_fp8.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::quant;
using namespace fp8rl::recipe;
using namespace fp8rl::hf;

namespace {

at::Tensor read(const safetensors::File& f, const std::string& name, at::ScalarType dt) {
  return model::to_host_tensor(f.get(name)).to(dt);
}

// A copy of the checkpoint at `src` with every decoder projection stored as HF FP8 (F8_E4M3 +
// weight_scale_inv, each HF module quantized on its own, as HF exporters do) and the FP8
// quantization_config in config.json.
void write_fp8_checkpoint(const std::string& src, const std::string& dst) {
  std::filesystem::create_directories(dst);
  const safetensors::Checkpoint ckpt(src);
  std::vector<safetensors::TensorToWrite> out;
  std::vector<at::Tensor> storage;
  for (const std::string& name : ckpt.names()) {
    const auto& v = ckpt.get(name);
    const bool proj = name.size() > 12 && name.compare(name.size() - 12, 12, "_proj.weight") == 0;
    if (!proj) {
      out.push_back({name, v.dtype, v.shape, v.data, v.nbytes});
      continue;
    }
    const at::Tensor w = model::to_host_tensor(v).to(at::kFloat);
    for (auto& t : hf_fp8_tensors(name.substr(0, name.size() - 7),
                                  quantize_weight(w, WeightScaling::block, Fp8Format::e4m3, false), storage))
      out.push_back(t);
  }
  safetensors::write_file(dst + "/model.safetensors", out);
  std::ifstream in(src + "/config.json");
  nlohmann::json cfg = nlohmann::json::parse(in);
  cfg["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                                {"weight_block_size", {128, 128}}};
  std::ofstream(dst + "/config.json") << cfg.dump(2);
}

// 1 - 2 sum(xy) / sum(x^2 + y^2) (DeepGEMM's measure): 0 when equal.
double diff(const at::Tensor& x, const at::Tensor& y) {
  at::Tensor a = x.to(at::kDouble), b = y.to(at::kDouble);
  return 1.0 - 2.0 * (a * b).sum().item<double>() / (a * a + b * b).sum().item<double>();
}

}  // namespace

TEST_CASE("an FP8 Qwen3 follows the precision plan and stays close to HF's logits", "[quant][fp8_model]") {
  const std::string dir = std::string(FP8RL_MODEL_DATA) + "/qwen3";
  const safetensors::File ref(dir + "/logits.safetensors");
  const at::Tensor ids = read(ref, "input_ids", at::kLong);     // [2, 11]
  const at::Tensor want = read(ref, "logits", at::kFloat);      // [2, 11, 512]

  QuantizationConfig q;  // FP8 E4M3, 128x128 blocks, 1x128 groups
  q.num_first_layers_in_bf16 = 1;
  const ModelShape shape = read_hf_config(dir);
  const PrecisionPlan plan = make_precision_plan(shape, q, "float32");
  model::LoadOptions opts;
  opts.dtype = at::kFloat;
  opts = fp8_load_options(plan, q, opts);
  model::CausalLM fp8 = model::CausalLM::load(dir, opts);
  model::CausalLM dense = model::CausalLM::load(dir, model::LoadOptions{at::kFloat});

  // Layer 0 stays dense (its q/k/v fused: BF16 always fuses); in layers 1-2 the fixture's q/k/v
  // rows (96, 32, 32) are not 128-aligned, so block-scaled FP8 keeps them apart, and each part is
  // FP8 with no trainable (BF16) weight.
  REQUIRE(fp8.layers()[0].qkv.specs.size() == 1);
  CHECK(dynamic_cast<const model::DenseLinear*>(fp8.layers()[0].qkv.linears[0].get()) != nullptr);
  for (size_t l = 1; l < fp8.layers().size(); ++l) {
    REQUIRE(fp8.layers()[l].qkv.specs.size() == 3);
    CHECK(fp8.layers()[l].qkv.specs[0].name == "model.layers." + std::to_string(l) + ".self_attn.q_proj");
    const auto* fq = dynamic_cast<const Fp8ModelLinear*>(fp8.layers()[l].qkv.linears[0].get());
    REQUIRE(fq != nullptr);
    std::vector<model::TensorRole> roles;
    fq->visit("q", [&](const model::ModelTensor& t) { roles.push_back(t.role); });
    CHECK(roles == std::vector<model::TensorRole>{model::TensorRole::fp8_data, model::TensorRole::fp8_scale});
    CHECK(fq->fp8().weight().data.scalar_type() == at::kFloat8_e4m3fn);
  }

  const at::Tensor got = fp8.logits(ids);
  const double d_fp8 = diff(got, want), d_dense = diff(dense.logits(ids), want);
  INFO("diff vs HF: fp8 " << d_fp8 << ", dense " << d_dense);
  // Dense is HF's math in another order (~1e-12 here). E4M3 rounds weights and activations to
  // 3 mantissa bits (2^-4 relative); over 2 quantized layers the logits move by ~1e-3 in this
  // measure, so 1e-2 catches a wrong scale or layout (which gives ~1) with room for the noise.
  CHECK(d_dense < 1e-9);
  CHECK(d_fp8 < 1e-2);
  CHECK(d_fp8 > d_dense);  // the FP8 path really quantized something
}

TEST_CASE("a pre-quantized HF FP8 checkpoint loads as stored and equals quantizing at load", "[quant][fp8_model]") {
  const std::string src = std::string(FP8RL_MODEL_DATA) + "/qwen3";
  fp8rl::test::TempDir tmp;
  const std::string dst = (tmp.path() / "qwen3-fp8").string();
  write_fp8_checkpoint(src, dst);
  const safetensors::File ref(src + "/logits.safetensors");
  const at::Tensor ids = read(ref, "input_ids", at::kLong);
  QuantizationConfig q;
  model::LoadOptions opts;
  opts.dtype = at::kFloat;
  const at::Tensor at_load = load_causal_lm(src, q, opts).logits(ids);
  const at::Tensor stored = load_causal_lm(dst, q, opts).logits(ids);
  // Same FP8 bytes and scales either way (quantized from the same values by the same code).
  CHECK(at::equal(at_load, stored));

  q.num_first_layers_in_bf16 = 1;  // layer 0 comes back dequantized (exactly) as a dense layer
  const at::Tensor mixed = load_causal_lm(dst, q, opts).logits(ids);
  CHECK(diff(mixed, read(ref, "logits", at::kFloat)) < 1e-2);

  QuantizationConfig none;
  none.quant_method = "none";
  CHECK_THROWS_AS(load_causal_lm(dst, none, opts), ConfigError);
  // The header-only check sees the same: 3 layers x 7 FP8 projections, refused under none.
  CHECK(check_model_dir(dst, q) == 21);
  CHECK(check_model_dir(src, q) == 0);
  REQUIRE_THROWS_CONTAINING(check_model_dir(dst, none), ConfigError, "needs quantization.quant_method: fp8");
}

TEST_CASE("128-aligned q/k/v and gate/up run fused in FP8, quantized at load or stored, same logits as split", "[quant][fp8_model]") {
  // Aligned shape: q 2x64 = 128, k/v 2x64 = 128 rows each, gate/up 256 each: block scales never
  // straddle two parts, so the fused FP8 weight holds exactly the parts' bytes and scales.
  ModelShape shape;
  shape.vocab_size = 300;
  shape.hidden_size = 128;
  shape.intermediate_size = 256;
  shape.num_hidden_layers = 2;
  shape.num_attention_heads = 2;
  shape.num_key_value_heads = 2;
  shape.head_dim = 64;
  fp8rl::test::TempDir tmp;
  const std::string src = (tmp.path() / "bf16").string(), dst = (tmp.path() / "fp8").string();
  model::write_random_checkpoint(src, "qwen3", shape, 3);
  write_fp8_checkpoint(src, dst);
  QuantizationConfig q;
  model::LoadOptions opts;
  opts.dtype = at::kFloat;
  const model::CausalLM at_load = load_causal_lm(src, q, opts);
  const model::CausalLM stored = load_causal_lm(dst, q, opts);
  for (const model::CausalLM* m : {&at_load, &stored}) {
    REQUIRE(m->layers()[1].qkv.specs.size() == 1);
    CHECK(m->layers()[1].qkv.specs[0].name == "model.layers.1.self_attn.qkv_proj");
    REQUIRE(dynamic_cast<const Fp8ModelLinear*>(m->layers()[1].qkv.linears[0].get()) != nullptr);
    REQUIRE(dynamic_cast<const model::GatedMlp&>(*m->layers()[1].mlp).gate_up().specs.size() == 1);
  }
  // Fused at load == the stored parts concatenated: same bytes, same scales.
  const auto& a = dynamic_cast<const Fp8ModelLinear*>(at_load.layers()[0].qkv.linears[0].get())->fp8().weight();
  const auto& b = dynamic_cast<const Fp8ModelLinear*>(stored.layers()[0].qkv.linears[0].get())->fp8().weight();
  CHECK(at::equal(a.data.view(at::kByte), b.data.view(at::kByte)));
  CHECK(at::equal(a.scale, b.scale));
  const at::Tensor ids = at::randint(300, {2, 9}, at::TensorOptions().dtype(at::kLong));
  const at::Tensor fused = at_load.logits(ids);
  CHECK(at::equal(fused, stored.logits(ids)));
  // The same model with fusion refused: per-part quantization gives the same FP8 values, so the
  // logits differ only by the GEMMs' float32 summation order.
  const PrecisionPlan plan = make_precision_plan(shape, q, "float32");
  model::LoadOptions split_opts = fp8_load_options(plan, q, opts);
  split_opts.fuse = [](const model::ProjectionGroup&, const model::WeightReader&) { return false; };
  const model::CausalLM split = model::CausalLM::load(src, split_opts);
  REQUIRE(split.layers()[1].qkv.specs.size() == 3);
  CHECK(diff(fused, split.logits(ids)) < 1e-10);
}

TEST_CASE("check_model_dir refuses weight dtypes no loader reads (E5M2, integers, BOOL)", "[quant][fp8_model][adversarial]") {
  const std::string src = std::string(FP8RL_MODEL_DATA) + "/qwen3";
  // A copy whose down_proj of layer 0 is stored as `dtype` (same bytes, relabelled or cut).
  auto relabel = [&](const std::string& dst, safetensors::Dtype dtype) {
    std::filesystem::create_directories(dst);
    std::filesystem::copy_file(src + "/config.json", dst + "/config.json");
    const safetensors::Checkpoint ckpt(src);
    std::vector<safetensors::TensorToWrite> out;
    for (const std::string& name : ckpt.names()) {
      const auto& v = ckpt.get(name);
      if (name == "model.layers.0.mlp.down_proj.weight") {
        size_t numel = 1;
        for (int64_t d : v.shape) numel *= size_t(d);
        out.push_back({name, dtype, v.shape, v.data, numel * safetensors::dtype_size(dtype)});
      } else {
        out.push_back({name, v.dtype, v.shape, v.data, v.nbytes});
      }
    }
    safetensors::write_file(dst + "/model.safetensors", out);
  };
  fp8rl::test::TempDir tmp;
  QuantizationConfig fp8, none;
  none.quant_method = "none";
  for (auto dtype : {safetensors::Dtype::F8_E5M2, safetensors::Dtype::I16, safetensors::Dtype::BOOL,
                     safetensors::Dtype::I8}) {
    const std::string dst = (tmp.path() / std::string(safetensors::dtype_name(dtype))).string();
    relabel(dst, dtype);
    INFO(safetensors::dtype_name(dtype));
    for (const auto* q : {&fp8, &none})
      REQUIRE_THROWS_CONTAINING(check_model_dir(dst, *q), ConfigError,
                                "tensor 'model.layers.0.mlp.down_proj.weight' is " +
                                    std::string(safetensors::dtype_name(dtype)) + "; weights must be BF16, F16 or F32");
  }
  const std::string f16 = (tmp.path() / "f16").string();
  relabel(f16, safetensors::Dtype::F16);
  CHECK(check_model_dir(f16, none) == 0);
}
