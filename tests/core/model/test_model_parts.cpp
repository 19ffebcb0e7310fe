// The decoder's pieces against hand-computed values: RMSNorm, RoPE (default and llama3
// scaling), config.json parsing (both transformers 4.x and 5.x RoPE spellings) and its errors.
#include <cmath>
#include <numbers>
#include <vector>

#include "core/model/layers.h"
#include "core/model/model_config.h"
#include "tests/core/model/model_test_util.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::hf;
using namespace fp8rl::model;
using fp8rl::test::max_abs_diff;

TEST_CASE("rms_norm matches a hand-computed row, in float32 and from bf16 input") {
  const at::Tensor x = at::tensor(std::vector<float>{1, 2, 3, 4}).reshape({1, 4});
  const at::Tensor w = at::tensor(std::vector<float>{1, 1, 2, 0.5});
  // mean(x^2) = 7.5; 1/sqrt(7.5) = 0.36514837
  const double r = 1.0 / std::sqrt(7.5);
  const at::Tensor want = at::tensor(std::vector<double>{r, 2 * r, 6 * r, 2 * r}).reshape({1, 4});
  CHECK(max_abs_diff(rms_norm(x, w, 0.0), want) < 1e-6);
  // eps enters inside the square root: 1/sqrt(7.5 + 2.5) = 1/sqrt(10).
  const double r2 = 1.0 / std::sqrt(10.0);
  CHECK(max_abs_diff(rms_norm(x, w, 2.5), at::tensor(std::vector<double>{r2, 2 * r2, 6 * r2, 2 * r2}).reshape({1, 4})) < 1e-6);
  // bf16 in -> bf16 out, normalised in float32 then rounded, then scaled by the weight.
  const at::Tensor xb = x.to(at::kBFloat16);
  const at::Tensor yb = rms_norm(xb, w.to(at::kBFloat16), 0.0);
  CHECK(yb.scalar_type() == at::kBFloat16);
  CHECK(max_abs_diff(yb, want) < 2e-2);  // two bf16 roundings of values below 2.2: < 2 * 2^-8 * 2.2
}

TEST_CASE("add_rms_norm is the residual sum and rms_norm of it, and carries gradients to both inputs") {
  const at::Tensor x = at::tensor(std::vector<float>{1, 2, 3, 4}).reshape({1, 4}).requires_grad_(true);
  const at::Tensor y = at::tensor(std::vector<float>{0, 0, 0, 1}).reshape({1, 4}).requires_grad_(true);
  const at::Tensor w = at::tensor(std::vector<float>{1, 1, 2, 0.5});
  const auto [sum, normed] = add_rms_norm(x, y, w, 0.0);
  CHECK(at::equal(sum, at::tensor(std::vector<float>{1, 2, 3, 5}).reshape({1, 4})));
  CHECK(at::equal(normed, rms_norm(x + y, w, 0.0)));
  (sum.sum() + normed.sum()).backward();  // the trainer's decoder differentiates through both
  REQUIRE(x.grad().defined());
  CHECK(at::equal(x.grad(), y.grad()));
}

TEST_CASE("rope inv_freq: default is 1/theta^(2i/d)") {
  ModelConfig c;
  c.shape.head_dim = 8;
  c.rope_theta = 10000.0;
  const at::Tensor inv = rope_inv_freq(c, at::kCPU);
  REQUIRE(inv.scalar_type() == at::kFloat);
  REQUIRE(inv.numel() == 4);
  for (int i = 0; i < 4; ++i) {
    const double want = 1.0 / std::pow(10000.0, 2.0 * i / 8.0);
    INFO("i " << i);
    CHECK(std::abs(inv[i].item<double>() - want) <= 1e-6 * want);
  }
}

TEST_CASE("rope inv_freq: llama3 scaling keeps high, divides low, blends medium frequencies") {
  ModelConfig c;
  c.shape.head_dim = 16;
  c.rope_theta = 500000.0;
  c.rope_scaling = RopeScaling{"llama3", 8.0, 1.0, 4.0, 64};
  const at::Tensor inv = rope_inv_freq(c, at::kCPU);
  REQUIRE(inv.numel() == 8);
  // Plain-loop transcription of the Llama 3.1 reference (apply_scaling in meta-llama's
  // reference code), in double. Wavelength thresholds: 64/4 = 16 (high), 64/1 = 64 (low).
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < 8; ++i) {
    const double f = 1.0 / std::pow(500000.0, 2.0 * i / 16.0);
    const double wavelen = 2 * std::numbers::pi / f;
    double want;
    if (wavelen < 16.0) {
      want = f;
      ++kept;
    } else if (wavelen > 64.0) {
      want = f / 8.0;
      ++divided;
    } else {
      const double smooth = (64.0 / wavelen - 1.0) / (4.0 - 1.0);
      want = (1 - smooth) * f / 8.0 + smooth * f;
      ++blended;
    }
    INFO("i " << i << " wavelen " << wavelen);
    CHECK(std::abs(inv[i].item<double>() - want) <= 1e-6 * want);
  }
  CHECK(kept >= 1);  // the case exercises all three branches
  CHECK(divided >= 1);
  CHECK(blended >= 1);
}

TEST_CASE("apply_rope rotates with HF's rotate_half convention") {
  ModelConfig c;
  c.shape.head_dim = 4;
  c.rope_theta = 10000.0;  // inv_freq = [1, 0.01]
  const at::Tensor inv = rope_inv_freq(c, at::kCPU);
  const at::Tensor pos = at::tensor(std::vector<int64_t>{0, 1});  // [N]
  const auto [cos, sin] = rope_cos_sin(inv, pos, at::kFloat);
  REQUIRE(cos.sizes() == at::IntArrayRef({2, 4}));
  const at::Tensor x = at::tensor(std::vector<float>{1, 2, 3, 4, 1, 2, 3, 4}).reshape({2, 1, 4});  // [N, H, D]
  const at::Tensor y = apply_rope(x, cos, sin);
  // Position 0 is the identity; position 1: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) with
  // pairs (0, 2) at angle 1 and (1, 3) at angle 0.01.
  const double c1 = std::cos(1.0), s1 = std::sin(1.0), c2 = std::cos(0.01), s2 = std::sin(0.01);
  const at::Tensor want = at::tensor(std::vector<double>{1, 2, 3, 4, 1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1,
                                                         4 * c2 + 2 * s2})
                              .reshape({2, 1, 4});
  CHECK(max_abs_diff(y, want) < 1e-6);
}

TEST_CASE("model config: transformers 5 rope_parameters and 4.x rope_theta/rope_scaling read alike") {
  const std::string v5 = R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 32, "intermediate_size": 40,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 512, "tie_word_embeddings": false, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}})";
  const std::string v4 = R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 32, "intermediate_size": 40,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 512, "tie_word_embeddings": false, "rope_theta": 500000.0, "rope_scaling": {"type": "llama3", "factor": 8.0,
    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}})";
  for (const std::string& text : {v5, v4}) {
    const ModelConfig c = parse_model_config(text, "config.json");
    CHECK(c.family == Family::llama);
    CHECK(c.rope_theta == 500000.0);
    CHECK(c.rope_scaling.type == "llama3");
    CHECK(c.rope_scaling.factor == 8.0);
    CHECK(c.rope_scaling.original_max_position_embeddings == 64);
    CHECK(c.shape.head_dim == 8);
    CHECK(c.rms_norm_eps == 1e-5);
    CHECK(!(c.qkv_bias));
    CHECK(!(c.qk_norm));
  }
  // Our writer's JSON reads back to the same config.
  for (Family f : {Family::qwen3, Family::qwen2, Family::llama}) {
    const ModelConfig c = default_model_config(f, fp8rl::test::tiny_shape(f == Family::qwen3));
    const ModelConfig back = parse_model_config(model_config_to_json(c), "config.json");
    CHECK(back.family == f);
    CHECK(back.rope_theta == c.rope_theta);
    CHECK(back.rope_scaling.type == c.rope_scaling.type);
    CHECK(back.qkv_bias == c.qkv_bias);
    CHECK(back.qk_norm == c.qk_norm);
    CHECK(back.shape.tie_word_embeddings == c.shape.tie_word_embeddings);
    CHECK(back.shape.head_dim == c.shape.head_dim);
  }
}

TEST_CASE("model config: unsupported model_type, rope type and keys are refused by name") {
  const std::string base = R"("vocab_size": 10, "hidden_size": 32, "intermediate_size": 40,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64)";
  REQUIRE_THROWS_CONTAINING(parse_model_config(R"({"model_type": "mistral", )" + base + "}", "/m/config.json"),
                            ConfigError, "/m/config.json: model_type 'mistral' is not supported");
  REQUIRE_THROWS_CONTAINING(parse_model_config(R"({"model_type": "qwen3_moe", )" + base + "}", "/m/config.json"),
                            ConfigError, "qwen3_moe");
  REQUIRE_THROWS_CONTAINING(
      parse_model_config(R"({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}, )" + base + "}",
                         "/m/config.json"),
      ConfigError, "rope type 'yarn' is not supported");
  REQUIRE_THROWS_CONTAINING(parse_model_config(R"({"model_type": "qwen3", "vocab_size": 10})", "/m/config.json"),
                            ConfigError, "missing required key 'hidden_size'");
  REQUIRE_THROWS_CONTAINING(
      parse_model_config(R"({"model_type": "qwen2", "use_sliding_window": true, )" + base + "}", "/m/config.json"),
      ConfigError, "use_sliding_window");
  // The context length is required (the engine's max_model_len comes from it) and bounded; the
  // norm's eps must be positive (a negative one made NaN log-probs).
  const std::string no_context = R"("vocab_size": 10, "hidden_size": 32, "intermediate_size": 40,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2)";
  REQUIRE_THROWS_CONTAINING(parse_model_config(R"({"model_type": "qwen3", )" + no_context + "}", "/m/config.json"),
                            ConfigError, "/m/config.json: missing required key 'max_position_embeddings'");
  for (const char* bad : {"0", "-1", "2147483648"})
    REQUIRE_THROWS_CONTAINING(parse_model_config(R"({"model_type": "qwen3", "max_position_embeddings": )" +
                                                     std::string(bad) + ", " + no_context + "}",
                                                 "/m/config.json"),
                              ConfigError, "max_position_embeddings must be in [1, 2^31)");
  REQUIRE_THROWS_CONTAINING(parse_model_config(R"({"model_type": "qwen3", "rms_norm_eps": -1, )" + base + "}", "/m/config.json"),
                            ConfigError, "rms_norm_eps must be in (0, 1)");
}
