// The precision plan: first/last BF16 layers, glob patterns, counts and bytes.
#include "core/util/error.h"
#include "core/recipe/model_presets.h"
#include "quant/precision_plan.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::quant;
using namespace fp8rl::recipe;
using namespace fp8rl::hf;

TEST_CASE("first/last layers and patterns stay BF16, the rest is FP8", "[precision_plan]") {
  ModelShape s = *qwen3_preset("tiny");  // 4 layers
  QuantizationConfig q;
  q.num_first_layers_in_bf16 = 1;
  q.num_last_layers_in_bf16 = 1;
  q.modules_in_bf16 = {"*.mlp.down_proj"};
  PrecisionPlan p = make_precision_plan(s, q, "bfloat16");
  REQUIRE(p.linears.size() == 4 * 7);
  CHECK(p.find("model.layers.0.self_attn.q_proj")->precision == Precision::bf16);
  CHECK(p.find("model.layers.0.self_attn.q_proj")->reason == "num_first_layers_in_bf16");
  CHECK(p.find("model.layers.3.mlp.up_proj")->reason == "num_last_layers_in_bf16");
  CHECK(p.find("model.layers.1.mlp.down_proj")->precision == Precision::bf16);
  CHECK(p.find("model.layers.1.mlp.down_proj")->reason == "modules_in_bf16: *.mlp.down_proj");
  CHECK(p.find("model.layers.1.mlp.up_proj")->precision == Precision::fp8);
  CHECK(p.find("model.layers.2.self_attn.k_proj")->precision == Precision::fp8);
  // Counts by hand: layers 1 and 2 have 6 FP8 linears each.
  int fp8 = 0;
  for (const auto& m : p.linears) fp8 += m.precision == Precision::fp8;
  CHECK(fp8 == 12);
  // tiny: hidden 64, q 4x16, kv 2x16, mlp 192. Per layer: q 64x64, k/v 32x64, o 64x64, gate/up 192x64.
  const int64_t per_layer_fp8 = 64 * 64 + 2 * 32 * 64 + 64 * 64 + 2 * 192 * 64;
  CHECK(p.fp8_params == 2 * per_layer_fp8);
  // Block scales: every matrix here fits one 128x128 block except gate/up (192 rows: 2 blocks).
  CHECK(p.fp8_bytes == 2 * per_layer_fp8 + 2 * (4 + 4 + 4 + 4 + 2 * 8) * 1);
  CHECK(p.summary().find("12 of 28 decoder linears in FP8") != std::string::npos);
}

TEST_CASE("quant_method none keeps every module in BF16, and typos in patterns are errors", "[precision_plan]") {
  ModelShape s = *qwen3_preset("8b");
  QuantizationConfig q;
  q.quant_method = "none";
  PrecisionPlan p = make_precision_plan(s, q, "bfloat16");
  CHECK(p.fp8_params == 0);
  CHECK(p.fp8_bytes == 0);
  // Qwen3-8B: about 8.2 B parameters, 16.4 GB in BF16.
  const int64_t total = p.bf16_linear_params + p.other_bf16_params;
  CHECK(total > 8000000000);
  CHECK(total < 8300000000);
  q.quant_method = "fp8";
  q.modules_in_bf16 = {"*.mlp.dwn_proj"};
  REQUIRE_THROWS_CONTAINING(make_precision_plan(s, q, "bfloat16"), ConfigError,
                            "pattern '*.mlp.dwn_proj' matches no module");
}

TEST_CASE("FP8 halves the bytes of the quantized linears", "[precision_plan]") {
  ModelShape s = *qwen3_preset("8b");
  QuantizationConfig fp8;
  QuantizationConfig none;
  none.quant_method = "none";
  PrecisionPlan a = make_precision_plan(s, fp8, "bfloat16"), b = make_precision_plan(s, none, "bfloat16");
  const int64_t linear_bf16_bytes = 2 * b.bf16_linear_params;
  CHECK(a.fp8_bytes > linear_bf16_bytes / 2);
  CHECK(a.fp8_bytes < linear_bf16_bytes / 2 * 1.001);  // block scales add < 0.1 %
}

// An FP8 checkpoint's quantization_config.modules_to_not_convert stays dense whatever the recipe
// says, matched as transformers matches it (the module name contains the entry); an entry that
// names no decoder linear (lm_head) is no error.
TEST_CASE("a checkpoint's modules_to_not_convert stay BF16", "[precision_plan]") {
  ModelShape s = *qwen3_preset("tiny");  // 4 layers
  QuantizationConfig q;
  const PrecisionPlan p = make_precision_plan(s, q, "bfloat16", {"model.layers.3.", "lm_head", "model.layers.1.mlp.down_proj"});
  CHECK(p.find("model.layers.3.self_attn.q_proj")->precision == Precision::bf16);
  CHECK(p.find("model.layers.3.self_attn.q_proj")->reason == "the checkpoint's modules_to_not_convert: model.layers.3.");
  CHECK(p.find("model.layers.3.mlp.gate_proj")->precision == Precision::bf16);
  CHECK(p.find("model.layers.1.mlp.down_proj")->precision == Precision::bf16);
  CHECK(p.find("model.layers.1.mlp.up_proj")->precision == Precision::fp8);
  CHECK(p.find("model.layers.2.self_attn.o_proj")->precision == Precision::fp8);
  int fp8 = 0;
  for (const auto& m : p.linears) fp8 += m.precision == Precision::fp8;
  CHECK(fp8 == 3 * 7 - 1);  // layers 0-2, but for layers.1's down_proj
}
