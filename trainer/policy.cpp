#include "trainer/policy.h"

#include <ATen/core/grad_mode.h>

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "core/model/attention.h"
#include "core/model/model_config.h"
#include "core/util/error.h"
#include "core/util/strings.h"
#include "loss/logprobs.h"
#include "quant/fp8_model.h"
#include "quant/scaling.h"
#include "trainer/lora.h"

namespace fp8rl::trainer {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Device resolve_device(const std::string& setting, const std::string& what) {
  if (setting == "cpu") return at::kCPU;
  if (setting == "cuda") {
    if (!at::hasCUDA()) throw ConfigError(what + " cuda, but this build of fp8rl has no CUDA or no GPU is visible");
    return at::Device(at::kCUDA, 0);
  }
  if (setting == "auto") return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  throw ConfigError(what + " '" + setting + "': expected auto, cpu or cuda");
}

at::ScalarType resolve_dtype(const std::string& name, const std::string& what) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float32") return at::kFloat;
  if (name == "float16") return at::kHalf;
  throw ConfigError(what + " '" + name + "': expected bfloat16, float32 or float16");
}

int64_t SequenceBatch::max_response() const {
  int64_t t = 1;
  for (const auto& r : responses) t = std::max<int64_t>(t, static_cast<int64_t>(r.size()));
  return t;
}

namespace {

model::CausalLM load_policy_model(const recipe::Recipe& r, const std::string& model_dir, at::Device device,
                                  const std::shared_ptr<PolicyMode>& mode, quant::PrecisionPlan& plan) {
  const bool lora = r.lora.rank > 0;
  quant::check_model_dir(model_dir, r.quantization);
  model::LoadOptions opts;
  opts.dtype = resolve_dtype(r.model.dtype);
  opts.device = device;
  opts.requires_grad = !lora;  // full fine-tuning trains every dense tensor
  if (r.quantization.quant_method == "fp8") {
    plan = quant::make_model_precision_plan(model_dir, model::read_model_config(model_dir).shape, r.quantization,
                                            r.model.dtype);
    opts = quant::fp8_load_options(plan, r.quantization, opts);
    if (!lora) opts.linear = master_weight_factory(opts.linear, parse_forward_precision(r.trainer.forward_precision), mode);
  }
  if (lora) opts.linear = lora_linear_factory(opts.linear, r.lora, static_cast<uint64_t>(r.trainer.seed), mode);
  return model::CausalLM::load(model_dir, opts);
}

// What the checkpointed layers' backward needs, alive until it has run.
struct ForwardState {
  model::VarlenAttention attention;
  model::AttentionContext ctx;
  model::Rope rope;
};

// Activation checkpointing of one decoder layer (torch.utils.checkpoint's reentrant variant):
// the forward keeps only the layer's input; backward recomputes the layer with autograd on and
// backpropagates through it, which also accumulates the gradients of the layer's trainable
// tensors. The recompute is exact: a layer has no randomness (LoRA dropout is refused with
// checkpointing by the recipe checks).
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const model::CausalLM* m, int64_t index,
                            const ForwardState* state) {
    ctx->save_for_backward({x});
    ctx->saved_data["model"] = reinterpret_cast<int64_t>(m);
    ctx->saved_data["state"] = reinterpret_cast<int64_t>(state);
    ctx->saved_data["index"] = index;
    return m->decoder_layer(index, x, state->rope, state->ctx);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto* m = reinterpret_cast<const model::CausalLM*>(ctx->saved_data["model"].toInt());
    const auto* state = reinterpret_cast<const ForwardState*>(ctx->saved_data["state"].toInt());
    const at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      at::AutoGradMode grad(true);
      y = m->decoder_layer(ctx->saved_data["index"].toInt(), x, state->rope, state->ctx);
    }
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <typename Fn>
void for_each_linear(const model::CausalLM& m, Fn&& fn) {
  for (const model::DecoderLayer& layer : m.layers()) {
    std::vector<const model::Projection*> slots{&layer.qkv, &layer.o};
    if (const auto* mlp = dynamic_cast<const model::GatedMlp*>(layer.mlp.get())) {
      slots.push_back(&mlp->gate_up());
      slots.push_back(&mlp->down());
    }
    for (const model::Projection* p : slots)
      for (const auto& l : p->linears) fn(l.get());
  }
}

}  // namespace

Policy::Policy(const recipe::Recipe& recipe, const std::string& model_dir, at::Device device)
    : mode_(std::make_shared<PolicyMode>()),
      model_(load_policy_model(recipe, model_dir, device, mode_, plan_)),
      lora_(recipe.lora.rank > 0),
      checkpointing_(recipe.model.enable_gradient_checkpointing) {
  for_each_linear(model_, [&](model::Linear* l) {
    if (auto* m = dynamic_cast<MasterWeightLinear*>(l)) masters_.push_back(m);
  });
}

std::vector<model::ModelTensor> Policy::trainable() const {
  std::vector<model::ModelTensor> out;
  model_.visit([&](const model::ModelTensor& t) {
    if (t.role == model::TensorRole::trainable) out.push_back(t);
  });
  return out;
}

ResponseLogprobs Policy::response_logprobs(const SequenceBatch& batch, double temperature, int64_t chunk_size) const {
  const int64_t B = static_cast<int64_t>(batch.prompts.size());
  FP8RL_CHECK(B > 0 && batch.responses.size() == batch.prompts.size(), "response_logprobs: empty or ragged batch");
  const int64_t T = batch.max_response();
  std::vector<int64_t> ids, positions, lengths, rows, targets, slots;
  for (int64_t i = 0; i < B; ++i) {
    const auto& p = batch.prompts[i];
    const auto& r = batch.responses[i];
    FP8RL_CHECK(!p.empty(), "response_logprobs: empty prompt");
    const int64_t start = static_cast<int64_t>(ids.size()), plen = static_cast<int64_t>(p.size());
    ids.insert(ids.end(), p.begin(), p.end());
    ids.insert(ids.end(), r.begin(), r.end());
    const int64_t len = plen + static_cast<int64_t>(r.size());
    for (int64_t t = 0; t < len; ++t) positions.push_back(t);
    lengths.push_back(len);
    for (int64_t j = 0; j < static_cast<int64_t>(r.size()); ++j) {
      rows.push_back(start + plen + j - 1);  // the position whose logits predict response token j
      targets.push_back(r[static_cast<size_t>(j)]);
      slots.push_back(i * T + j);
    }
  }
  const at::Device dev = model_.device();
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  auto state = std::make_shared<ForwardState>();
  state->ctx = model::whole_sequences(lengths, dev, &state->attention);
  const at::Tensor ids_t = at::tensor(ids, i64).to(dev);
  state->rope = model_.rope(at::tensor(positions, i64).to(dev));
  const bool grad = at::GradMode::is_enabled();
  at::Tensor x = model_.embed(ids_t);  // [N, H]
  // A checkpointed layer is an autograd Function of its input only: if the input does not require
  // grad (a frozen embedding under LoRA), autograd would never call its backward and the layer's
  // adapters would get no gradient. A leaf that requires grad keeps the chain connected.
  if (grad && checkpointing_ && !x.requires_grad()) x = x.detach().requires_grad_(true);
  for (int64_t l = 0; l < static_cast<int64_t>(model_.layers().size()); ++l)
    x = grad && checkpointing_ ? CheckpointedLayer::apply(x, &model_, l, state.get())
                               : model_.decoder_layer(l, x, state->rope, state->ctx);
  const at::Tensor h = model_.final_norm(x).index_select(0, at::tensor(rows, i64).to(dev));  // [R, H]
  const loss::TokenLogprobs tl =
      loss::chunked_logprobs_entropy(h, model_.lm_head_weight(), at::tensor(targets, i64).to(dev), chunk_size, temperature);
  const at::Tensor slot_t = at::tensor(slots, i64).to(dev);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  ResponseLogprobs out;
  out.logp = at::zeros({B * T}, f32).index_put({slot_t}, tl.logprobs.to(at::kFloat)).view({B, T});
  out.entropy = at::zeros({B * T}, f32).index_put({slot_t}, tl.entropy.to(at::kFloat)).view({B, T});
  out.mask = at::zeros({B * T}, f32).index_fill_(0, slot_t, 1.0).view({B, T});
  out.keepalive = state;
  return out;
}

void Policy::sync_weights() {
  if (!masters_.empty()) {
    const at::Tensor nonfinite = at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(model_.device()));
    for (MasterWeightLinear* m : masters_) m->requantize(nonfinite);
    quant::throw_if_nonfinite(nonfinite, "a master weight after the optimizer step");
  }
  model_.bump_weight_version();
}

}  // namespace fp8rl::trainer
