#include "core/model/decoder.h"

#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/hf/safetensors.h"

namespace fp8rl::model {

CausalLM::CausalLM(CausalLM&&) noexcept = default;
CausalLM& CausalLM::operator=(CausalLM&&) noexcept = default;
CausalLM::~CausalLM() = default;

CausalLM CausalLM::load(const std::string& model_dir, const LoadOptions& options) {
  const ModelConfig config = read_model_config(model_dir);  // refuses unknown model_type first
  const safetensors::Checkpoint checkpoint(model_dir);
  return load(config, checkpoint, options);
}

CausalLM CausalLM::load(const ModelConfig& config, const safetensors::Checkpoint& ckpt, const LoadOptions& o) {
  if (o.dtype != at::kBFloat16 && o.dtype != at::kFloat && o.dtype != at::kHalf)
    throw ConfigError(cat("model dtype ", c10::toString(o.dtype), " is not supported (bf16, fp16 or fp32)"));
  FP8RL_CHECK(o.linear != nullptr && o.fuse != nullptr && o.mlp != nullptr,
              "LoadOptions: the linear factory, fuse policy and MLP factory must be set");
  CausalLM m;
  m.config_ = config;
  m.dtype_ = o.dtype;
  m.tied_ = config.shape.tie_word_embeddings;
  m.default_attention_ = std::make_unique<VarlenAttention>();

  // Every tensor is checked for presence and shape before any is converted, so a bad checkpoint
  // fails fast with the first wrong name.
  const std::vector<TensorSpec> specs = checkpoint_tensors(config);
  for (const TensorSpec& spec : specs) ckpt.expect_shape(spec.name, spec.shape);
  // Tensors the config does not account for (more layers than num_hidden_layers, a family's
  // extra weights) are ignored, as HF does, but said: they usually mean a config mismatch. A tied
  // lm_head.weight some exporters still write is expected, and so are the tensors the linear
  // factory reads itself.
  {
    std::unordered_set<std::string> expected;
    for (const TensorSpec& spec : specs) expected.insert(spec.name);
    auto factory_reads = [&](const std::string& name) {
      for (const std::string& suffix : o.factory_tensor_suffixes)
        if (name.ends_with(suffix)) return true;
      return false;
    };
    std::vector<std::string> unused;
    for (const std::string& name : ckpt.names())
      if (!expected.count(name) && name != "lm_head.weight" && !factory_reads(name)) unused.push_back(name);
    if (!unused.empty())
      log::warn(cat(ckpt.source(), ": ", unused.size(), " tensor(s) not used by the ", to_string(config.family),
                    " model, e.g. '", unused.front(), "'"));
  }
  // Tensors are converted when taken, so a linear factory that quantizes (quant/fp8_model.h)
  // sees one projection's BF16 weights at a time and the model never holds the whole BF16 copy
  // beside the FP8 one.
  const WeightReader reader(ckpt, o.dtype, o.device, o.requires_grad);
  std::unordered_map<std::string, const TensorSpec*> spec_of;
  for (const TensorSpec& spec : specs) spec_of.emplace(spec.name, &spec);
  auto take = [&](const std::string& name) -> at::Tensor {
    auto it = spec_of.find(name);
    if (it == spec_of.end()) return {};
    at::Tensor t = reader.dense(name, it->second->shape);
    if (o.requires_grad) t.set_requires_grad(true);
    return t;
  };

  m.embed_tokens_ = take("model.embed_tokens.weight");
  m.norm_ = take("model.norm.weight");
  if (!m.tied_) m.lm_head_ = take("lm_head.weight");
  const int64_t L = config.shape.num_hidden_layers;
  m.layers_.reserve(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = cat("model.layers.", i, ".");
    const LayerProjections proj = layer_projections(config.shape, config.qkv_bias, i);
    DecoderLayer layer;
    // Sequenced in checkpoint order (q, k, v, o, gate, up, down): the factory sees modules as
    // they come in the file.
    layer.input_layernorm = take(p + "input_layernorm.weight");
    layer.qkv = make_projection(proj.qkv, o.linear, o.fuse, reader);
    layer.o = make_projection(proj.o, o.linear, o.fuse, reader);
    layer.q_norm = take(p + "self_attn.q_norm.weight");
    layer.k_norm = take(p + "self_attn.k_norm.weight");
    layer.post_attention_layernorm = take(p + "post_attention_layernorm.weight");
    layer.mlp = o.mlp(proj, o.linear, o.fuse, reader);
    FP8RL_CHECK(layer.mlp != nullptr, "LoadOptions::mlp returned no MLP for layer " + std::to_string(i));
    m.layers_.push_back(std::move(layer));
  }
  m.inv_freq_ = rope_inv_freq(config, o.device);
  log::debug(cat("model: loaded ", to_string(config.family), " (", L, " layers, hidden ", config.shape.hidden_size,
                 ") from ", ckpt.source()));
  return m;
}

at::Tensor CausalLM::self_attention(const DecoderLayer& l, int64_t index, const at::Tensor& h, const at::Tensor& delta,
                                    at::Tensor& x, const Rope& rope, const AttentionContext& ctx) const {
  const hf::ModelShape& s = config_.shape;
  const int64_t N = h.size(0), D = s.head_dim;
  const int64_t qd = s.num_attention_heads * D, kvd = s.num_key_value_heads * D;
  const double eps = config_.rms_norm_eps;
  at::Tensor projected;  // [N, qd + 2 kvd]
  if (delta.defined()) {
    projected = l.qkv.forward_add_rms_normed(h, delta, l.input_layernorm, eps, x);
  } else {
    x = h;
    projected = l.qkv.forward_rms_normed(x, l.input_layernorm, eps);
  }
  // Split into views; one split node (not three narrows), so backward writes the three
  // gradients into one [N, qd + 2 kvd] buffer instead of three zero-filled ones.
  const std::vector<at::Tensor> qkv = projected.split_with_sizes({qd, kvd, kvd}, 1);
  const at::Tensor v = qkv[2].view({N, s.num_key_value_heads, D});  // [N, Hkv, D]
  // q_norm / k_norm (Qwen3), then RoPE, inside attention: one kernel for both under inference on
  // CUDA, which the engine's attention also has store K and V in its cache.
  const QkRotation rotation{config_.qk_norm ? l.q_norm : at::Tensor(), config_.qk_norm ? l.k_norm : at::Tensor(), eps,
                            rope.cos, rope.sin};
  const at::Tensor o = ctx.attention->forward_rotating(qkv[0].view({N, s.num_attention_heads, D}),
                                                       qkv[1].view({N, s.num_key_value_heads, D}), v, rotation, ctx,
                                                       index);  // [N, Hq, D]
  return l.o.forward(o.reshape({N, qd}));
}

at::Tensor CausalLM::embed(const at::Tensor& ids) const { return at::embedding(embed_tokens_, ids); }

Rope CausalLM::rope(const at::Tensor& positions) const {
  auto [cos, sin] = rope_cos_sin(inv_freq_, positions, dtype_);
  return {std::move(cos), std::move(sin)};
}

std::pair<at::Tensor, at::Tensor> CausalLM::decoder_layer_unsummed(int64_t index, const at::Tensor& h,
                                                                   const at::Tensor& delta, const Rope& rope,
                                                                   const AttentionContext& ctx) const {
  FP8RL_CHECK(index >= 0 && index < static_cast<int64_t>(layers_.size()), "decoder_layer: index out of range");
  const DecoderLayer& l = layers_[static_cast<size_t>(index)];
  // The norms go in with the projections they feed (Linear::forward_rms_normed: an FP8 linear
  // makes its quantized input in the norm's kernel), and so do the residual adds before them
  // (forward_add_rms_normed): x = h + delta in input_layernorm's kernel, x + attention(x) in
  // post_attention_layernorm's.
  at::Tensor x, after_attention;
  const at::Tensor attn = self_attention(l, index, h, delta, x, rope, ctx);
  const at::Tensor mlp =
      l.mlp->forward_add_rms_normed(x, attn, l.post_attention_layernorm, config_.rms_norm_eps, after_attention);
  return {std::move(after_attention), mlp};
}

at::Tensor CausalLM::decoder_layer(int64_t index, const at::Tensor& x, const Rope& rope,
                                   const AttentionContext& ctx) const {
  const auto [h, mlp] = decoder_layer_unsummed(index, x, at::Tensor(), rope, ctx);
  return h + mlp;
}

at::Tensor CausalLM::final_norm(const at::Tensor& x) const { return rms_norm(x, norm_, config_.rms_norm_eps); }

at::Tensor CausalLM::lm_head(const at::Tensor& hidden) const { return at::linear(hidden, lm_head_weight()); }

void CausalLM::lm_head_into(const at::Tensor& hidden, at::Tensor& out) const {
  at::linear_out(out, hidden, lm_head_weight());
}

at::Tensor CausalLM::forward(const at::Tensor& ids, const at::Tensor& positions, const AttentionContext& ctx) const {
  FP8RL_CHECK(ids.dim() == 1 && ids.scalar_type() == at::kLong, "forward: ids must be [N] int64");
  FP8RL_CHECK(positions.sizes() == ids.sizes() && positions.scalar_type() == at::kLong,
              "forward: positions must be [N] int64 like ids");
  FP8RL_CHECK(ctx.attention != nullptr, "forward: the context names no attention");
  FP8RL_CHECK(ids.size(0) == ctx.num_tokens(),
              cat("forward: ", ids.size(0), " tokens, the context's sequences hold ", ctx.num_tokens()));
  const Rope r = rope(positions);
  // The residual stream as h + delta, summed in the next norm's kernel: decoder_layer's ops, with
  // each layer's last add moved into the next layer's input_layernorm (or the final norm).
  at::Tensor h = embed(ids), delta;  // [N, H]
  for (int64_t i = 0; i < static_cast<int64_t>(layers_.size()); ++i)
    std::tie(h, delta) = decoder_layer_unsummed(i, h, delta, r, ctx);
  return delta.defined() ? add_rms_norm(h, delta, norm_, config_.rms_norm_eps).second : final_norm(h);
}

at::Tensor CausalLM::hidden_states(const at::Tensor& input_ids, const ForwardOptions& options) const {
  FP8RL_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong, "hidden_states: input_ids must be [B, T] int64");
  const int64_t B = input_ids.size(0), T = input_ids.size(1), H = config_.shape.hidden_size;
  const at::Device dev = device();
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(dev);
  at::Tensor positions = options.positions;
  if (positions.defined()) {
    FP8RL_CHECK(positions.sizes() == input_ids.sizes(), "hidden_states: positions must be [B, T] like input_ids");
    positions = positions.to(dev);
  } else {
    positions = at::arange(T, long_opts).unsqueeze(0).expand({B, T});
  }
  Attention* attention = options.attention ? options.attention : default_attention_.get();
  const at::Tensor ids = input_ids.to(dev);
  if (!options.attention_mask.defined()) {  // every row is a whole sequence of T tokens
    const std::vector<int64_t> lengths(static_cast<size_t>(B), T);
    const AttentionContext ctx = whole_sequences(lengths, dev, attention);
    return forward(ids.reshape({-1}), positions.reshape({-1}), ctx).view({B, T, H});
  }
  FP8RL_CHECK(options.attention_mask.sizes() == input_ids.sizes(), "hidden_states: attention_mask must be [B, T]");
  // Only real tokens are packed: row b's tokens become sequence b, in order.
  const at::Tensor keep = options.attention_mask.to(dev).to(at::kBool).reshape({-1});  // [B*T]
  const at::Tensor rows = keep.nonzero().squeeze(1);                                   // [N]
  const at::Tensor lengths_t = options.attention_mask.to(at::kCPU).to(at::kBool).sum(1).to(at::kLong).contiguous();
  const std::vector<int64_t> lengths(lengths_t.data_ptr<int64_t>(), lengths_t.data_ptr<int64_t>() + B);
  const AttentionContext ctx = whole_sequences(lengths, dev, attention);
  const at::Tensor hidden = forward(ids.reshape({-1}).index_select(0, rows), positions.reshape({-1}).index_select(0, rows), ctx);
  return at::zeros({B * T, H}, hidden.options()).index_copy(0, rows, hidden).view({B, T, H});
}

at::Tensor CausalLM::logits(const at::Tensor& input_ids, const ForwardOptions& options) const {
  return lm_head(hidden_states(input_ids, options));
}

void CausalLM::visit(const TensorVisitor& fn) const {
  auto dense = [&](const std::string& name, const at::Tensor& t) {
    if (t.defined()) fn({name, t, dense_role(t)});
  };
  dense("model.embed_tokens.weight", embed_tokens_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayer& l = layers_[i];
    const std::string p = cat("model.layers.", i, ".");
    dense(p + "input_layernorm.weight", l.input_layernorm);
    l.qkv.visit(fn);
    l.o.visit(fn);
    dense(p + "self_attn.q_norm.weight", l.q_norm);
    dense(p + "self_attn.k_norm.weight", l.k_norm);
    dense(p + "post_attention_layernorm.weight", l.post_attention_layernorm);
    l.mlp->visit(fn);
  }
  dense("model.norm.weight", norm_);
  if (!tied_) dense("lm_head.weight", lm_head_);
  fn({"model.rotary_emb.inv_freq", inv_freq_, TensorRole::buffer});
}

std::vector<ModelTensor> CausalLM::tensors() const {
  std::vector<ModelTensor> out;
  visit([&](const ModelTensor& t) { out.push_back(t); });
  return out;
}

}  // namespace fp8rl::model
