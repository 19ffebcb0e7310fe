// Loading, the random checkpoint writer, and properties of the forward that need no reference
// model: causality, left padding, dtypes, pluggable linears, autograd. Parity with HF's forward
// is in test_model_parity.cpp.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>

#include <c10/core/GradMode.h>

#include "core/model/decoder.h"
#include "core/model/random_checkpoint.h"
#include "tests/core/model/model_test_util.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::hf;
using namespace fp8rl::model;
using fp8rl::test::max_abs_diff;
using fp8rl::test::TempDir;
using fp8rl::test::tiny_shape;

namespace {

at::Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(V, {B, T}, g, at::TensorOptions().dtype(at::kLong));
}

LoadOptions fp32() {
  LoadOptions o;
  o.dtype = at::kFloat;
  return o;
}

}  // namespace

TEST_CASE("write_random_checkpoint -> load round trip, every family") {
  for (const char* arch : {"qwen3", "qwen2", "llama"}) {
    for (bool tied : {true, false}) {
      INFO(arch << " tied " << tied);
      TempDir dir;
      const std::string d = (dir.path() / "m").string();
      write_random_checkpoint(d, arch, tiny_shape(tied), 42);
      const CausalLM m = CausalLM::load(d, fp32());
      CHECK(std::string(to_string(m.config().family)) == arch);
      CHECK(m.config().shape.tie_word_embeddings == tied);

      // Every tensor came through unchanged (BF16 -> float32 is exact) and is where HF puts it.
      const safetensors::File file(d + "/model.safetensors");
      // Fused q/k/v and gate/up are compared part by part under their HF names.
      size_t seen = 0;
      for (const ModelTensor& mt : m.tensors()) {
        if (mt.role == TensorRole::buffer) continue;
        for_each_hf_tensor(mt, [&](const std::string& name, const at::Tensor& t) {
          INFO(name);
          ++seen;
          REQUIRE(file.contains(name));
          CHECK(max_abs_diff(t, fp8rl::test::read_tensor(file, name)) == 0.0);
        });
      }
      CHECK(seen == file.tensors().size());
      // q/k/v and gate/up run fused (dense weights always fuse).
      REQUIRE(m.layers()[0].qkv.specs.size() == 1);
      CHECK(m.layers()[0].qkv.specs[0].name == "model.layers.0.self_attn.qkv_proj");
      CHECK(m.layers()[0].qkv.specs[0].parts.size() == 3);
      // HF init: normal(0, 0.02) weights, RMSNorm ones, biases zeros.
      const double sd = m.embed_tokens().std().item<double>();
      CHECK(std::abs(sd - 0.02) < 0.002);
      CHECK(m.layers()[0].input_layernorm.eq(1).all().item<bool>());
      if (std::string(arch) == "qwen2") {
        REQUIRE(file.contains("model.layers.1.self_attn.k_proj.bias"));
      } else {
        CHECK(!(file.contains("model.layers.1.self_attn.k_proj.bias")));
      }
      CHECK(file.contains("model.layers.0.self_attn.q_norm.weight") == (std::string(arch) == "qwen3"));
      CHECK(file.contains("lm_head.weight") == !tied);
      if (tied) CHECK(m.lm_head_weight().is_same(m.embed_tokens()));

      const at::Tensor ids = random_ids(2, 5, 97, 1);
      const at::Tensor logits = m.logits(ids);
      REQUIRE(logits.sizes() == at::IntArrayRef({2, 5, 97}));
      CHECK(logits.isfinite().all().item<bool>());
      const at::Tensor hidden = m.hidden_states(ids);
      REQUIRE(hidden.sizes() == at::IntArrayRef({2, 5, 48}));
      CHECK(max_abs_diff(at::matmul(hidden, m.lm_head_weight().t()), logits) < 1e-5);
    }
  }
}

TEST_CASE("write_random_checkpoint is deterministic per seed and refuses unknown archs") {
  TempDir dir;
  const std::string a = (dir.path() / "a").string(), b = (dir.path() / "b").string(), c = (dir.path() / "c").string();
  write_random_checkpoint(a, "qwen3", tiny_shape(true), 7);
  write_random_checkpoint(b, "qwen3", tiny_shape(true), 7);
  write_random_checkpoint(c, "qwen3", tiny_shape(true), 8);
  CHECK(test::read_file(a + "/model.safetensors") == test::read_file(b + "/model.safetensors"));
  CHECK(test::read_file(a + "/model.safetensors") != test::read_file(c + "/model.safetensors"));
  REQUIRE_THROWS_CONTAINING(write_random_checkpoint((dir.path() / "d").string(), "mistral", tiny_shape(true), 1),
                            ConfigError, "model_type 'mistral' is not supported");
}

TEST_CASE("load errors name the file and the tensor") {
  TempDir dir;
  const std::string d = (dir.path() / "m").string();
  write_random_checkpoint(d, "qwen2", tiny_shape(false), 3);

  SECTION("unknown model_type") {
    std::string cfg = test::read_file(d + "/config.json");
    cfg.replace(cfg.find("\"qwen2\""), 7, "\"gemma\"");
    std::ofstream(d + "/config.json", std::ios::trunc) << cfg;
    REQUIRE_THROWS_CONTAINING(CausalLM::load(d, fp32()), ConfigError, "config.json: model_type 'gemma' is not supported");
  }
  SECTION("missing tensor") {
    const std::string path = d + "/model.safetensors";
    std::vector<safetensors::TensorToWrite> keep;
    std::vector<at::Tensor> data;
    {
      const safetensors::File file(path);
      data.reserve(file.tensors().size());
      for (const auto& t : file.tensors()) {
        if (t.name == "model.layers.1.self_attn.v_proj.bias") continue;
        data.push_back(fp8rl::test::read_tensor(file, t.name));
        keep.push_back({t.name, t.dtype, t.shape, data.back().data_ptr(), t.nbytes});
      }
    }
    safetensors::write_file(path, keep);
    REQUIRE_THROWS_CONTAINING(CausalLM::load(d, fp32()), ConfigError, "model.layers.1.self_attn.v_proj.bias");
    REQUIRE_THROWS_CONTAINING(CausalLM::load(d, fp32()), ConfigError, "model.safetensors");
  }
  SECTION("shape disagrees with the config") {
    ModelConfig config = read_model_config(d);
    config.shape.intermediate_size = 80;
    const safetensors::Checkpoint ckpt(d);
    REQUIRE_THROWS_CONTAINING(CausalLM::load(config, ckpt, fp32()), ConfigError,
                              "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [72, 48], config says [80, 48]");
    REQUIRE_THROWS_CONTAINING(CausalLM::load(config, ckpt, fp32()), ConfigError, "model.safetensors");
  }
}

TEST_CASE("forward is causal: changing token t changes no logit before t") {
  TempDir dir;
  write_random_checkpoint(dir.path().string(), "qwen3", tiny_shape(true), 5);
  const CausalLM m = CausalLM::load(dir.path().string(), fp32());
  at::Tensor ids = random_ids(1, 9, 97, 2);
  const at::Tensor before = m.logits(ids);
  ids.index_put_({0, 6}, (ids[0][6].item<int64_t>() + 1) % 97);
  const at::Tensor after = m.logits(ids);
  CHECK(max_abs_diff(before.narrow(1, 0, 6), after.narrow(1, 0, 6)) < 1e-6);
  CHECK(max_abs_diff(before.narrow(1, 6, 3), after.narrow(1, 6, 3)) > 1e-4);
}

TEST_CASE("left padding with attention_mask + positions reproduces the unpadded logits") {
  for (const char* arch : {"qwen3", "llama"}) {
    INFO(arch);
    TempDir dir;
    write_random_checkpoint(dir.path().string(), arch, tiny_shape(false), 9);
    const CausalLM m = CausalLM::load(dir.path().string(), fp32());
    const at::Tensor seq = random_ids(1, 5, 97, 4);
    const at::Tensor want = m.logits(seq);  // [1, 5, V]
    // Row 0: two pads then the sequence; row 1: the sequence then two more tokens (no pads).
    const at::Tensor pads = at::zeros({1, 2}, at::kLong);
    const at::Tensor ids = at::cat({at::cat({pads, seq}, 1), at::cat({seq, random_ids(1, 2, 97, 5)}, 1)}, 0);
    const at::Tensor mask = at::tensor(std::vector<int64_t>{0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}).reshape({2, 7});
    ForwardOptions fo;
    fo.attention_mask = mask;
    fo.positions = (mask.cumsum(1) - 1).clamp_min(0);  // what HF's generate() does for left padding
    const at::Tensor got = m.logits(ids, fo);
    CHECK(got.isfinite().all().item<bool>());  // pad rows included
    CHECK(max_abs_diff(got[0].narrow(0, 2, 5), want[0]) < 1e-5);
    CHECK(max_abs_diff(got[1].narrow(0, 0, 5), want[0]) < 1e-5);
  }
}

TEST_CASE("bf16 forward stays close to the fp32 forward") {
  TempDir dir;
  write_random_checkpoint(dir.path().string(), "qwen2", tiny_shape(false), 11);
  const CausalLM m32 = CausalLM::load(dir.path().string(), fp32());
  const CausalLM m16 = CausalLM::load(dir.path().string());  // default: bf16
  REQUIRE(m16.dtype() == at::kBFloat16);
  const at::Tensor ids = random_ids(2, 8, 97, 3);
  const at::Tensor l32 = m32.logits(ids), l16 = m16.logits(ids);
  REQUIRE(l16.scalar_type() == at::kBFloat16);
  // Logits here are ~0.1 in size (0.02-std weights); bf16 keeps 8 significant bits, and each
  // of the ~15 roundings on the way adds at most 2^-9 relative, so 1e-2 is generous and 0.1 would
  // mean a real bug.
  const double diff = max_abs_diff(l16, l32);
  INFO("max |bf16 - fp32| = " << diff << ", max |fp32| = " << l32.abs().max().item<double>());
  CHECK(diff < 1e-2);
}

namespace {
// A Linear that counts its calls and can scale its output: stands in for FP8 / LoRA linears.
struct CountingLinear final : Linear {
  CountingLinear(at::Tensor w, at::Tensor b, std::shared_ptr<int> calls, double scale)
      : inner(std::move(w), std::move(b)), calls(std::move(calls)), scale(scale) {}
  at::Tensor forward(const at::Tensor& x) override {
    ++*calls;
    return inner.forward(x) * scale;
  }
  void visit(const std::string& module, const TensorVisitor& fn) const override { inner.visit(module, fn); }
  DenseLinear inner;
  std::shared_ptr<int> calls;
  double scale;
};
}  // namespace

TEST_CASE("linears are pluggable: a factory sees every projection, fused or by HF name") {
  TempDir dir;
  write_random_checkpoint(dir.path().string(), "qwen3", tiny_shape(true), 13);
  auto calls = std::make_shared<int>(0);
  std::vector<std::string> names;
  LoadOptions o = fp32();
  double scale = 1.0;
  o.linear = [&](const ProjectionSpec& spec, const WeightReader& reader) -> std::unique_ptr<Linear> {
    names.push_back(spec.name);
    const double s = spec.name == "model.layers.1.mlp.down_proj" ? scale : 1.0;
    auto [w, b] = read_dense_projection(spec, reader);
    return std::make_unique<CountingLinear>(std::move(w), std::move(b), calls, s);
  };
  const CausalLM plain = CausalLM::load(dir.path().string(), fp32());
  const CausalLM counted = CausalLM::load(dir.path().string(), o);
  REQUIRE(names.size() == 8);  // 2 layers x (qkv, o, gate_up, down)
  CHECK(names.front() == "model.layers.0.self_attn.qkv_proj");
  CHECK(names[2] == "model.layers.0.mlp.gate_up_proj");
  CHECK(names.back() == "model.layers.1.mlp.down_proj");
  const at::Tensor ids = random_ids(1, 4, 97, 6);
  CHECK(max_abs_diff(plain.logits(ids), counted.logits(ids)) == 0.0);
  CHECK(*calls == 8);
  scale = 2.0;  // a different linear in one slot changes the output
  names.clear();
  const CausalLM scaled = CausalLM::load(dir.path().string(), o);
  CHECK(max_abs_diff(plain.logits(ids), scaled.logits(ids)) > 1e-4);

  // A fuse policy that says no: the parts run one by one under their HF names, same logits.
  o.fuse = [](const ProjectionGroup&, const WeightReader&) { return false; };
  scale = 1.0;
  names.clear();
  const CausalLM split = CausalLM::load(dir.path().string(), o);
  REQUIRE(names.size() == 14);  // 2 layers x (q, k, v, o, gate, up, down)
  CHECK(names.front() == "model.layers.0.self_attn.q_proj");
  CHECK(names[5] == "model.layers.0.mlp.up_proj");
  CHECK(max_abs_diff(plain.logits(ids), split.logits(ids)) < 1e-6);
}

TEST_CASE("the MLP is pluggable: an MLP factory builds each layer's block") {
  // Stands in for a mixture-of-experts block: wraps the dense one and counts its calls.
  struct CountingMlp final : MlpBlock {
    CountingMlp(std::unique_ptr<MlpBlock> inner, std::shared_ptr<int> calls) : inner(std::move(inner)), calls(std::move(calls)) {}
    at::Tensor forward(const at::Tensor& x) override {
      ++*calls;
      return inner->forward(x);
    }
    void visit(const TensorVisitor& fn) const override { inner->visit(fn); }
    std::unique_ptr<MlpBlock> inner;
    std::shared_ptr<int> calls;
  };
  TempDir dir;
  write_random_checkpoint(dir.path().string(), "qwen2", tiny_shape(false), 4);
  auto calls = std::make_shared<int>(0);
  LoadOptions o = fp32();
  o.mlp = [&](const LayerProjections& p, const LinearFactory& linear, const FusePolicy& fuse, const WeightReader& r) {
    return std::unique_ptr<MlpBlock>(std::make_unique<CountingMlp>(gated_mlp_factory()(p, linear, fuse, r), calls));
  };
  const CausalLM counted = CausalLM::load(dir.path().string(), o);
  const CausalLM plain = CausalLM::load(dir.path().string(), fp32());
  const at::Tensor ids = random_ids(1, 4, 97, 3);
  CHECK(max_abs_diff(counted.logits(ids), plain.logits(ids)) == 0.0);
  CHECK(*calls == 2);  // one call per layer
}

TEST_CASE("the weight version starts at 0 and moves only when bumped") {
  TempDir dir;
  write_random_checkpoint(dir.path().string(), "llama", tiny_shape(true), 2);
  CausalLM m = CausalLM::load(dir.path().string(), fp32());
  CHECK(m.weight_version() == 0);
  (void)m.logits(random_ids(1, 3, 97, 1));
  CHECK(m.weight_version() == 0);
  m.bump_weight_version();
  m.bump_weight_version();
  CHECK(m.weight_version() == 2);
}

TEST_CASE("requires_grad: every parameter gets a gradient") {
  TempDir dir;
  write_random_checkpoint(dir.path().string(), "qwen2", tiny_shape(false), 17);
  LoadOptions o = fp32();
  o.requires_grad = true;
  const CausalLM m = CausalLM::load(dir.path().string(), o);
  const at::Tensor ids = random_ids(2, 6, 97, 7);
  const at::Tensor loss = at::log_softmax(m.logits(ids), -1).select(-1, 3).mean();
  loss.backward();
  for (const ModelTensor& t : m.tensors()) {
    INFO(t.name);
    if (t.role == TensorRole::buffer) continue;
    REQUIRE(t.role == TensorRole::trainable);
    REQUIRE(t.tensor.grad().defined());
    CHECK(t.tensor.grad().isfinite().all().item<bool>());
  }
  // Embedding rows of ids not in the batch get exactly zero gradient (no leak across rows).
  const at::Tensor used = at::zeros({97}, at::kBool).index_put_({ids.reshape({-1})}, true);
  const at::Tensor g = m.embed_tokens().grad();
  CHECK(g.index({at::logical_not(used)}).abs().max().item<double>() == 0.0);
  CHECK(g.index({used}).abs().max().item<double>() > 0.0);
}
