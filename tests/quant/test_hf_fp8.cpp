// HF FP8 checkpoints: a hand-written file in HF's layout loads to the values it encodes; our
// weights round-trip through HF's layout; malformed files and configs give clear errors.
#include <ATen/ATen.h>

#include "core/util/error.h"
#include "quant/fp8_format.h"
#include "quant/hf_fp8.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::quant;
using fp8rl::test::TempDir;

TEST_CASE("a hand-made HF FP8 tensor dequantizes to q * scale_inv per block", "[hf_fp8]") {
  TempDir dir;
  // W [130, 3]: two row blocks. Block (0,0) scale 0.5, block (1,0) scale 4. Codes by hand:
  // 0x38 = 1.0, 0xB8 = -1.0, 0x40 = 2.0 in E4M3.
  std::vector<uint8_t> q(130 * 3, 0x38);
  q[0] = 0x40;
  q[129 * 3 + 2] = 0xB8;
  std::vector<float> s{0.5f, 4.0f};
  safetensors::write_file((dir.path() / "model.safetensors").string(),
                          {{"m.weight", safetensors::Dtype::F8_E4M3, {130, 3}, q.data(), q.size()},
                           {"m.weight_scale_inv", safetensors::Dtype::F32, {2, 1}, s.data(), 8}});
  safetensors::Checkpoint ckpt(dir.path().string());
  Fp8Weight w = load_hf_fp8_weight(ckpt, "m", at::kCPU);
  at::Tensor d = dequantize(w);
  REQUIRE(d.sizes() == at::IntArrayRef({130, 3}));
  CHECK(d[0][0].item<float>() == 1.0f);    // 2 * 0.5
  CHECK(d[0][1].item<float>() == 0.5f);    // 1 * 0.5
  CHECK(d[127][2].item<float>() == 0.5f);  // last row of block 0
  CHECK(d[128][0].item<float>() == 4.0f);  // first row of block 1
  CHECK(d[129][2].item<float>() == -4.0f);
}

TEST_CASE("our block weights round-trip through HF's layout", "[hf_fp8]") {
  TempDir dir;
  at::manual_seed(31);
  Fp8Weight w = quantize_weight(at::randn({300, 200}), WeightScaling::block, Fp8Format::e4m3, false);
  std::vector<at::Tensor> storage;
  auto tensors = hf_fp8_tensors("model.layers.0.mlp.up_proj", w, storage);
  CHECK(tensors[1].shape == std::vector<int64_t>{3, 2});
  safetensors::write_file((dir.path() / "model.safetensors").string(), tensors);
  Fp8Weight back = load_hf_fp8_weight(safetensors::Checkpoint(dir.path().string()), "model.layers.0.mlp.up_proj",
                                      at::kCPU);
  CHECK(at::equal(back.data.view(at::kByte), w.data.view(at::kByte)));
  CHECK(at::equal(back.scale, w.scale));
}

TEST_CASE("HF FP8 errors name the file and tensor", "[hf_fp8]") {
  TempDir dir;
  std::vector<uint8_t> q(4, 0x38);
  std::vector<float> s{1.0f, 1.0f};
  std::vector<uint16_t> bf(4, 0);
  safetensors::write_file((dir.path() / "model.safetensors").string(),
                          {{"a.weight", safetensors::Dtype::F8_E4M3, {2, 2}, q.data(), 4},
                           {"b.weight", safetensors::Dtype::BF16, {2, 2}, bf.data(), 8},
                           {"c.weight", safetensors::Dtype::F8_E4M3, {2, 2}, q.data(), 4},
                           {"c.weight_scale_inv", safetensors::Dtype::F32, {2, 1}, s.data(), 8}});
  safetensors::Checkpoint ckpt(dir.path().string());
  REQUIRE_THROWS_CONTAINING(load_hf_fp8_weight(ckpt, "a", at::kCPU), ConfigError, "has no 'a.weight_scale_inv'");
  REQUIRE_THROWS_CONTAINING(load_hf_fp8_weight(ckpt, "b", at::kCPU), ConfigError, "'b.weight' is BF16");
  REQUIRE_THROWS_CONTAINING(load_hf_fp8_weight(ckpt, "c", at::kCPU), ConfigError, "c.weight_scale_inv");
}

TEST_CASE("quantization_config is read and checked", "[hf_fp8]") {
  TempDir dir;
  dir.write("a/config.json", R"({"model_type": "qwen3"})");
  CHECK_FALSE(read_hf_fp8_config((dir.path() / "a").string()).has_value());
  dir.write("b/config.json", R"({"quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
      "activation_scheme": "dynamic", "weight_block_size": [128, 128], "modules_to_not_convert": ["lm_head"]}})");
  auto c = read_hf_fp8_config((dir.path() / "b").string());
  REQUIRE(c.has_value());
  CHECK(c->modules_to_not_convert == std::vector<std::string>{"lm_head"});
  dir.write("c/config.json", R"({"quantization_config": {"quant_method": "fp8", "activation_scheme": "static"}})");
  REQUIRE_THROWS_CONTAINING(read_hf_fp8_config((dir.path() / "c").string()), ConfigError, "expected dynamic");
  dir.write("d/config.json", R"({"quantization_config": {"quant_method": "awq"}})");
  REQUIRE_THROWS_CONTAINING(read_hf_fp8_config((dir.path() / "d").string()), ConfigError, "'awq'");
  dir.write("e/config.json", R"({"quantization_config": {"quant_method": "fp8", "weight_block_size": [64, 64]}})");
  REQUIRE_THROWS_CONTAINING(read_hf_fp8_config((dir.path() / "e").string()), ConfigError, "[128, 128]");
}

// A dense export beside a copy of an FP8 checkpoint's config.json drops its quantization_config
// (its weights carry no scales); the other keys stay, and a config without one is left as is.
TEST_CASE("quantization_config is dropped for a dense model, other keys kept", "[hf_fp8]") {
  TempDir dir;
  dir.write("f/config.json", R"({"model_type": "qwen3", "quantization_config": {"quant_method": "fp8"}})");
  drop_hf_quantization_config((dir.path() / "f").string());
  CHECK_FALSE(read_hf_fp8_config((dir.path() / "f").string()).has_value());
  CHECK(test::read_file(dir.path() / "f" / "config.json").find("\"model_type\": \"qwen3\"") != std::string::npos);
  dir.write("g/config.json", R"({"model_type": "qwen3"})");
  drop_hf_quantization_config((dir.path() / "g").string());
  CHECK_FALSE(read_hf_fp8_config((dir.path() / "g").string()).has_value());
}
