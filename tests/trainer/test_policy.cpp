// The policy on CPU: the trainer's packed forward against the padded reference, activation
// checkpointing changing nothing, LoRA on the shared FP8 base (one copy of the weights, gradients
// only on adapters), and full fine-tuning re-quantizing the FP8 copy in place.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <map>
#include <set>

#include "core/model/tensor_visitor.h"
#include "quant/fp8_model.h"
#include "rollout/engine.h"
#include "tests/catch.h"
#include "tests/trainer/trainer_test_util.h"
#include "trainer/full_finetune.h"
#include "trainer/optimizer.h"
#include "trainer/tensor_file.h"
#include "trainer/policy.h"

using namespace fp8rl;
using namespace fp8rl::trainer;

namespace {

recipe::Recipe tiny_recipe(const test::TempDir& dir, std::vector<std::string> overrides) {
  return test::quickstart(dir, std::move(overrides)).recipe;
}

SequenceBatch some_sequences() {
  SequenceBatch b;
  b.prompts = {{1, 2, 3, 4, 5}, {9, 8}, {7, 7, 7}};
  b.responses = {{10, 11, 12}, {13}, {14, 15, 16, 17, 18}};
  return b;
}

// log softmax(logits / T)[target] of the responses by the padded full-logits forward, [B, T].
at::Tensor reference_logprobs(const model::CausalLM& m, const SequenceBatch& b, double temperature) {
  at::Tensor out = at::zeros({static_cast<int64_t>(b.prompts.size()), b.max_response()});
  for (size_t i = 0; i < b.prompts.size(); ++i) {
    std::vector<int64_t> ids = b.prompts[i];
    ids.insert(ids.end(), b.responses[i].begin(), b.responses[i].end());
    const at::Tensor lp = at::log_softmax(m.logits(at::tensor(ids).unsqueeze(0))[0].to(at::kFloat) / temperature, -1);
    for (size_t j = 0; j < b.responses[i].size(); ++j)
      out[static_cast<int64_t>(i)][static_cast<int64_t>(j)] =
          lp[static_cast<int64_t>(b.prompts[i].size() + j) - 1][b.responses[i][j]];
  }
  return out;
}

int64_t unique_storage_bytes(const model::CausalLM& m) {
  std::set<const void*> seen;
  int64_t bytes = 0;
  m.visit([&](const model::ModelTensor& t) {
    if (seen.insert(t.tensor.storage().data()).second) bytes += static_cast<int64_t>(t.tensor.storage().nbytes());
  });
  return bytes;
}

}  // namespace

TEST_CASE("the trainer's packed log-probs equal the padded forward's", "[trainer][policy]") {
  test::TempDir dir;
  const std::string model_dir = test::tiny_model_dir(dir);
  const Policy policy(tiny_recipe(dir, {"quantization.quant_method=none", "lora.rank=0"}), model_dir, at::kCPU);
  const SequenceBatch b = some_sequences();
  at::NoGradGuard no_grad;
  const ResponseLogprobs lp = policy.response_logprobs(b, 0.7, /*chunk_size=*/4);
  CHECK(lp.logp.sizes() == at::IntArrayRef({3, 5}));
  CHECK(at::equal(lp.mask.sum(1), at::tensor({3.0f, 1.0f, 5.0f})));
  CHECK(at::allclose(lp.logp, reference_logprobs(policy.model(), b, 0.7) * lp.mask, 1e-4, 1e-5));
}

TEST_CASE("activation checkpointing gives the gradients of the plain backward", "[trainer][policy]") {
  test::TempDir dir;
  const std::string model_dir = test::tiny_model_dir(dir);
  auto grads = [&](bool checkpointing) {
    Policy policy(tiny_recipe(dir, {"quantization.quant_method=none", "lora.rank=4",
                                    std::string("model.enable_gradient_checkpointing=") + (checkpointing ? "true" : "false")}),
                  model_dir, at::kCPU);
    // Non-zero B so gradients reach A as well.
    for (const model::ModelTensor& t : policy.trainable()) {
      at::NoGradGuard g;
      t.tensor.detach().normal_(0, 0.05, at::detail::createCPUGenerator(3));
    }
    const ResponseLogprobs lp = policy.response_logprobs(some_sequences(), 1.0);
    (lp.logp * lp.mask).sum().backward();
    std::vector<at::Tensor> out;
    for (const model::ModelTensor& t : policy.trainable()) out.push_back(t.tensor.grad().clone());
    return out;
  };
  const std::vector<at::Tensor> plain = grads(false), ckpt = grads(true);
  REQUIRE(plain.size() == ckpt.size());
  REQUIRE(!plain.empty());
  for (size_t i = 0; i < plain.size(); ++i) CHECK(at::allclose(plain[i], ckpt[i], 1e-4, 1e-6));
}

TEST_CASE("LoRA on the FP8 base: one copy of the weights, gradients only on the adapters", "[trainer][policy][lora]") {
  test::TempDir dir;
  const std::string model_dir = test::tiny_model_dir(dir);
  const recipe::Recipe r = tiny_recipe(dir, {"lora.rank=4"});
  Policy policy(r, model_dir, at::kCPU);
  // At init B = 0: the policy is exactly the FP8 base.
  quant::PrecisionPlan plan;
  model::LoadOptions base;
  base.dtype = at::kFloat;
  const model::CausalLM fp8_base = quant::load_causal_lm(model_dir, r.quantization, base, &plan);
  const SequenceBatch b = some_sequences();
  {
    at::NoGradGuard g;
    CHECK(at::allclose(policy.response_logprobs(b, 1.0).logp,
                       reference_logprobs(fp8_base, b, 1.0) * policy.response_logprobs(b, 1.0).mask, 1e-4, 1e-5));
  }
  // Only adapters train, all FP32.
  const std::vector<model::ModelTensor> trainable = policy.trainable();
  REQUIRE(!trainable.empty());
  for (const model::ModelTensor& t : trainable) {
    CHECK(t.name.find("lora_") != std::string::npos);
    CHECK(t.tensor.scalar_type() == at::kFloat);
  }
  // The engine reads the policy's model object: its FP8 data is the trainer's, and the model holds
  // no second copy: its storage is the FP8 bytes, the plan's dense bytes and the adapters.
  std::vector<const void*> fp8_before;
  policy.model().visit([&](const model::ModelTensor& t) {
    if (t.role == model::TensorRole::fp8_data) fp8_before.push_back(t.tensor.data_ptr());
  });
  REQUIRE(!fp8_before.empty());
  rollout::Engine engine(policy.model(), {});
  {
    Policy::RolloutScope scope(policy);
    rollout::GenerateRequest q;
    q.prompt = {1, 2, 3};
    q.params.n = 2;
    q.params.max_new_tokens = 3;
    engine.generate({q});
  }
  std::vector<const void*> fp8_after;
  policy.model().visit([&](const model::ModelTensor& t) {
    if (t.role == model::TensorRole::fp8_data) fp8_after.push_back(t.tensor.data_ptr());
  });
  CHECK(fp8_before == fp8_after);
  // The adapters' storage: the packed A and block-diagonal B of each projection (trainer/lora.h).
  int64_t adapter_bytes = 0;
  std::set<const void*> adapter_storages;
  for (const model::ModelTensor& t : trainable)
    if (adapter_storages.insert(t.tensor.storage().data()).second) adapter_bytes += static_cast<int64_t>(t.tensor.storage().nbytes());
  int64_t fp8_bytes = 0;  // as stored: padded to whole 128 x 128 blocks
  policy.model().visit([&](const model::ModelTensor& t) {
    if (t.role == model::TensorRole::fp8_data || t.role == model::TensorRole::fp8_scale)
      fp8_bytes += static_cast<int64_t>(t.tensor.nbytes());
  });
  CHECK(unique_storage_bytes(policy.model()) <= fp8_bytes + plan.bf16_bytes + adapter_bytes + 1024);
  // Backward reaches the adapters and nothing else.
  const ResponseLogprobs lp = policy.response_logprobs(b, 1.0);
  (lp.logp * lp.mask).sum().backward();
  int64_t with_grad = 0;
  for (const model::ModelTensor& t : trainable) with_grad += t.tensor.grad().defined() ? 1 : 0;
  CHECK(with_grad == static_cast<int64_t>(trainable.size()));
}

TEST_CASE("LoRA: the engine's packed adapter path equals the trainer's and follows in-place updates", "[trainer][policy][lora]") {
  test::TempDir dir;
  const std::string model_dir = test::tiny_model_dir(dir);
  // float32: the engine reads the packed FP32 tensors; bfloat16: its BF16 copies of them, which
  // must be refreshed after an update (a stale copy would give the pre-update logits).
  for (const char* dtype : {"float32", "bfloat16"}) {
    DYNAMIC_SECTION("model.dtype " << dtype) {
      const bool bf16 = std::string(dtype) == "bfloat16";
      const double atol = bf16 ? 0.03 : 1e-5, rtol = bf16 ? 0.03 : 1e-4;
      // Parts of the fused qkv and gate_up only: B's block rows start inside the fused output.
      Policy policy(tiny_recipe(dir, {"quantization.quant_method=none", "lora.rank=4", std::string("model.dtype=") + dtype,
                                      "lora.target_modules=[k_proj, v_proj, o_proj, up_proj]"}),
                    model_dir, at::kCPU);
      const at::Tensor ids = at::tensor(std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7}).unsqueeze(0);
      auto trainer_logits = [&] {  // per-part FP32 adapters, as autograd sees them
        at::NoGradGuard g;
        return policy.model().logits(ids).to(at::kFloat);
      };
      auto engine_logits = [&] {  // the packed tensors (or their copies), as the rollout engine runs them
        c10::InferenceMode inference;
        return policy.model().logits(ids).to(at::kFloat);
      };
      const at::Tensor base = trainer_logits();
      for (const model::ModelTensor& t : policy.trainable()) {  // non-zero B so the adapters add something
        at::NoGradGuard g;
        t.tensor.detach().normal_(0, 0.2, at::detail::createCPUGenerator(5));
      }
      const at::Tensor adapted = trainer_logits();
      CHECK((adapted - base).abs().max().item<double>() > 10 * atol);
      CHECK(at::allclose(engine_logits(), adapted, rtol, atol));
      // An optimizer-style in-place update of the per-part leaves reaches what the engine reads.
      for (const model::ModelTensor& t : policy.trainable()) {
        at::NoGradGuard g;
        t.tensor.detach().normal_(0, 0.2, at::detail::createCPUGenerator(6));
      }
      const at::Tensor updated = trainer_logits();
      CHECK((updated - adapted).abs().max().item<double>() > 10 * atol);
      CHECK(at::allclose(engine_logits(), updated, rtol, atol));
    }
  }
}

TEST_CASE("full fine-tuning re-quantizes the FP8 copy in place after an update", "[trainer][policy][full]") {
  test::TempDir dir;
  const std::string model_dir = test::tiny_model_dir(dir);
  for (const char* precision : {"bf16", "fp8"}) {
    DYNAMIC_SECTION("forward_precision " << precision) {
      Policy policy(tiny_recipe(dir, {"lora.rank=0", std::string("trainer.forward_precision=") + precision}), model_dir,
                    at::kCPU);
      std::vector<model::ModelTensor> fp8;
      int64_t masters = 0;
      policy.model().visit([&](const model::ModelTensor& t) {
        if (t.role == model::TensorRole::fp8_data) fp8.push_back(t);
        if (t.name.find(".master_weight") != std::string::npos) ++masters;
      });
      REQUIRE(!fp8.empty());
      CHECK(masters == static_cast<int64_t>(fp8.size()));
      const at::Tensor before = fp8.front().tensor.to(at::kFloat).clone();
      const void* ptr = fp8.front().tensor.data_ptr();
      AdamWOptions o;
      o.lr = 0.05;
      AdamW opt(policy.trainable(), o);
      const ResponseLogprobs lp = policy.response_logprobs(some_sequences(), 1.0);
      (lp.logp * lp.mask).sum().backward();
      for (const model::ModelTensor& t : policy.trainable())
        if (t.name.find(".master_weight") != std::string::npos) {
          REQUIRE(t.tensor.grad().defined());
          CHECK(at::isfinite(t.tensor.grad()).all().item<bool>());
        }
      const uint64_t version = policy.model().weight_version();
      opt.step(o.lr);
      policy.sync_weights();
      CHECK(fp8.front().tensor.data_ptr() == ptr);  // the same storage the engine reads
      CHECK_FALSE(at::equal(fp8.front().tensor.to(at::kFloat), before));
      CHECK(policy.model().weight_version() == version + 1);
    }
  }
}

// A projection with a bias (Qwen2's q/k/v): the trainer's FP8 forward through the master weight
// adds the bias once, as the engine's (rollout mode) does, and the bias still gets its gradient.
TEST_CASE("full fine-tuning's FP8 forward adds a projection's bias once, as the engine's does",
          "[trainer][policy][full]") {
  at::manual_seed(4);
  const at::Tensor w = at::randn({256, 128});
  const at::Tensor bias = (at::randn({256}) * 3).requires_grad_(true);
  auto mode = std::make_shared<PolicyMode>();
  MasterWeightLinear layer(std::make_unique<quant::Fp8ModelLinear>(quant::Fp8Linear(
                               quant::quantize_weight(w, quant::WeightScaling::block, quant::Fp8Format::e4m3, false),
                               bias, quant::ActScaling::group, false)),
                           w.clone(), ForwardPrecision::fp8, mode);
  const at::Tensor x = at::randn({5, 128});
  const at::Tensor trained = layer.forward(x);
  mode->rollout = true;
  const at::Tensor served = layer.forward(x);
  CHECK(at::allclose(trained, served, 0, 1e-5));
  trained.sum().backward();
  REQUIRE(bias.grad().defined());
  CHECK(at::allclose(bias.grad(), at::full({256}, 5.0f)));
}

// Full fine-tuning's FP32 masters come from the checkpoint as stored: an F32 checkpoint under a
// BF16 model keeps every bit (they were rounded through BF16 first).
TEST_CASE("full fine-tuning's masters of an F32 checkpoint are its values, not their BF16 rounding",
          "[trainer][policy][full]") {
  test::TempDir dir;
  const std::string model_dir = test::tiny_model_dir(dir);
  const std::string file = model_dir + "/model.safetensors";
  std::map<std::string, at::Tensor> f32 = load_tensors(file);
  for (auto& [name, t] : f32) t = t.to(at::kFloat) * (1 + 1e-4 * at::randn(t.sizes()));  // off the BF16 grid
  save_tensors(file, f32);
  const Policy policy(tiny_recipe(dir, {"lora.rank=0", "model.dtype=bfloat16"}), model_dir, at::kCPU);
  int checked = 0;
  policy.model().visit([&](const model::ModelTensor& t) {
    if (t.name.find(".master_weight") == std::string::npos || t.projection == nullptr) return;
    std::vector<at::Tensor> parts;
    for (const std::string& part : t.projection->parts) parts.push_back(f32.at(part + ".weight"));
    CHECK(at::equal(t.tensor, at::cat(parts, 0)));
    ++checked;
  });
  CHECK(checked > 0);
}
