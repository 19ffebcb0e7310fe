// The policy on CPU: the trainer's packed forward against the padded reference, activation
// checkpointing changing nothing, LoRA on the shared FP8 base (one copy of the weights, gradients
// only on adapters), and full fine-tuning re-quantizing the FP8 copy in place.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <set>

#include "core/model/tensor_visitor.h"
#include "quant/fp8_model.h"
#include "rollout/engine.h"
#include "tests/catch.h"
#include "tests/trainer/trainer_test_util.h"
#include "trainer/full_finetune.h"
#include "trainer/optimizer.h"
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
  int64_t adapter_bytes = 0;
  for (const model::ModelTensor& t : trainable) adapter_bytes += t.tensor.numel() * 4;
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
