#include "core/model/layers.h"

#include <cmath>
#include <numbers>

#include <c10/core/InferenceMode.h>

#include "core/util/error.h"
#include "core/util/log.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "core/model/cuda/fused_inference.h"
#endif

namespace fp8rl::model {
namespace {

#ifdef FP8RL_WITH_CUDA
// The fused kernels serve inference only (the rollout engine runs under InferenceMode): the
// trainer's forwards, with autograd or in its no-grad old log-prob recompute, keep the ATen ops,
// so old and new log-probs of a PPO step come from the same arithmetic.
// x [N, D] or [N, heads, D] with unit stride along D.
bool fused_applies(const at::Tensor& x, const at::Tensor& other) {
  const at::ScalarType t = x.scalar_type();
  return x.is_cuda() && c10::InferenceMode::is_enabled() && (t == at::kBFloat16 || t == at::kHalf) &&
         other.scalar_type() == t && (x.dim() == 2 || x.dim() == 3) && x.stride(-1) == 1;
}

cuda::RowsView rows_of(const at::Tensor& x) {
  const bool heads = x.dim() == 3;
  return {x.data_ptr(), x.size(0), heads ? x.size(1) : 1, x.size(-1), x.stride(0), heads ? x.stride(1) : 0,
          x.scalar_type() == at::kBFloat16};
}
#endif

}  // namespace

const char* to_string(TensorRole role) {
  switch (role) {
    case TensorRole::trainable: return "trainable";
    case TensorRole::frozen: return "frozen";
    case TensorRole::fp8_data: return "fp8_data";
    case TensorRole::fp8_scale: return "fp8_scale";
    case TensorRole::buffer: return "buffer";
  }
  return "?";
}

void for_each_hf_tensor(const ModelTensor& t, const std::function<void(const std::string&, const at::Tensor&)>& fn) {
  if (t.projection == nullptr || !t.projection->fused()) return fn(t.name, t.tensor);
  FP8RL_CHECK(t.role != TensorRole::fp8_data && t.role != TensorRole::fp8_scale,
              "for_each_hf_tensor: FP8 tensors of fused projections are split by quant/");
  const ProjectionSpec& p = *t.projection;
  FP8RL_CHECK(t.name.starts_with(p.name + "."), "for_each_hf_tensor: tensor not of its projection");
  const std::string local = t.name.substr(p.name.size());  // ".weight" | ".bias"
  int64_t offset = 0;
  for (size_t i = 0; i < p.parts.size(); ++i) {
    fn(p.parts[i] + local, t.tensor.narrow(0, offset, p.part_out[i]));
    offset += p.part_out[i];
  }
}

DenseLinear::DenseLinear(at::Tensor weight, at::Tensor bias) : weight_(std::move(weight)), bias_(std::move(bias)) {
  FP8RL_CHECK(weight_.dim() == 2, "DenseLinear: weight must be [out, in]");
  FP8RL_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == weight_.size(0)),
              "DenseLinear: bias must be [out]");
}

at::Tensor DenseLinear::forward(const at::Tensor& x) {
  return bias_.defined() ? at::linear(x, weight_, bias_) : at::linear(x, weight_);
}

void DenseLinear::visit(const std::string& module, const TensorVisitor& fn) const {
  fn({module + ".weight", weight_, dense_role(weight_)});
  if (bias_.defined()) fn({module + ".bias", bias_, dense_role(bias_)});
}

std::pair<at::Tensor, at::Tensor> read_dense_projection(const ProjectionSpec& spec, const WeightReader& reader) {
  std::vector<at::Tensor> w, b;
  for (size_t i = 0; i < spec.parts.size(); ++i) {
    const std::vector<int64_t> wshape{spec.part_out[i], spec.in_features}, bshape{spec.part_out[i]};
    w.push_back(reader.dense(spec.parts[i] + ".weight", wshape));
    if (spec.bias) b.push_back(reader.dense(spec.parts[i] + ".bias", bshape));
  }
  // One part: the tensor itself; several: one [sum out, K] copy (the parts are freed on return).
  at::Tensor weight = w.size() == 1 ? w[0] : at::cat(w, 0);
  at::Tensor bias = b.empty() ? at::Tensor() : b.size() == 1 ? b[0] : at::cat(b, 0);
  if (reader.requires_grad()) {
    weight.set_requires_grad(true);
    if (bias.defined()) bias.set_requires_grad(true);
  }
  return {weight, bias};
}

LinearFactory dense_linear_factory() {
  return [](const ProjectionSpec& spec, const WeightReader& reader) -> std::unique_ptr<Linear> {
    auto [weight, bias] = read_dense_projection(spec, reader);
    return std::make_unique<DenseLinear>(std::move(weight), std::move(bias));
  };
}

at::Tensor Projection::forward(const at::Tensor& x) const {
  if (linears.size() == 1) return linears[0]->forward(x);
  std::vector<at::Tensor> outs;
  outs.reserve(linears.size());
  for (const auto& l : linears) outs.push_back(l->forward(x));
  return at::cat(outs, -1);
}

// Unfused parts share one normed input (or one SiLU-mul output): computed once, as before.
at::Tensor Projection::forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps) const {
  if (linears.size() == 1) return linears[0]->forward_rms_normed(x, norm_weight, eps);
  return forward(rms_norm(x, norm_weight, eps));
}

at::Tensor Projection::forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual,
                                              const at::Tensor& norm_weight, double eps, at::Tensor& sum) const {
  if (linears.size() == 1) return linears[0]->forward_add_rms_normed(x, residual, norm_weight, eps, sum);
  auto [s, normed] = add_rms_norm(x, residual, norm_weight, eps);
  sum = std::move(s);
  return forward(normed);
}

at::Tensor Projection::forward_silu_mul(const at::Tensor& gate_up) const {
  if (linears.size() == 1) return linears[0]->forward_silu_mul(gate_up);
  return forward(silu_mul(gate_up));
}

void Projection::visit(const TensorVisitor& fn) const {
  for (size_t i = 0; i < specs.size(); ++i)
    linears[i]->visit(specs[i].name, [&](const ModelTensor& t) {
      ModelTensor tagged = t;
      tagged.projection = &specs[i];
      fn(tagged);
    });
}

int64_t Projection::out_features() const {
  int64_t n = 0;
  for (const ProjectionSpec& s : specs) n += s.out_features();
  return n;
}

Projection make_projection(const ProjectionGroup& group, const LinearFactory& factory, const FusePolicy& fuse,
                           const WeightReader& reader) {
  Projection p;
  if (group.parts.size() > 1 && fuse(group, reader))
    p.specs.push_back(group.fuse());
  else
    p.specs = group.parts;
  for (const ProjectionSpec& spec : p.specs) {
    p.linears.push_back(factory(spec, reader));
    FP8RL_CHECK(p.linears.back() != nullptr, "LinearFactory returned no linear for " + spec.name);
  }
  return p;
}

GatedMlp::GatedMlp(Projection gate_up, Projection down) : gate_up_(std::move(gate_up)), down_(std::move(down)) {
  FP8RL_CHECK(gate_up_.out_features() % 2 == 0, "GatedMlp: gate_up must hold gate and up of equal width");
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
#ifdef FP8RL_WITH_CUDA
  if (fused_applies(gate_up, gate_up) && gate_up.dim() == 2 && gate_up.size(1) % 2 == 0) {
    const int64_t n = gate_up.size(0), inter = gate_up.size(1) / 2;
    at::Tensor out = at::empty({n, inter}, gate_up.options());
    cuda::silu_mul_rows(gate_up.data_ptr(), n, inter, gate_up.stride(0), gate_up.scalar_type() == at::kBFloat16,
                        out.data_ptr(), at::cuda::getCurrentCUDAStream(gate_up.device().index()).stream());
    return out;
  }
#endif
  const std::vector<at::Tensor> gu = gate_up.chunk(2, -1);  // [..., 2I] -> gate, up [..., I]
  return at::silu(gu[0]) * gu[1];
}

at::Tensor GatedMlp::forward(const at::Tensor& x) { return down_.forward_silu_mul(gate_up_.forward(x)); }

at::Tensor GatedMlp::forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps) {
  return down_.forward_silu_mul(gate_up_.forward_rms_normed(x, norm_weight, eps));
}

at::Tensor GatedMlp::forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual,
                                            const at::Tensor& norm_weight, double eps, at::Tensor& sum) {
  return down_.forward_silu_mul(gate_up_.forward_add_rms_normed(x, residual, norm_weight, eps, sum));
}

at::Tensor MlpBlock::forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual,
                                            const at::Tensor& norm_weight, double eps, at::Tensor& sum) {
  auto [s, normed] = add_rms_norm(x, residual, norm_weight, eps);
  sum = std::move(s);
  return forward(normed);
}

at::Tensor Linear::forward_add_rms_normed(const at::Tensor& x, const at::Tensor& residual,
                                          const at::Tensor& norm_weight, double eps, at::Tensor& sum) {
  auto [s, normed] = add_rms_norm(x, residual, norm_weight, eps);
  sum = std::move(s);
  return forward(normed);
}

at::Tensor MlpBlock::forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps) {
  return forward(rms_norm(x, norm_weight, eps));
}

at::Tensor Linear::forward_rms_normed(const at::Tensor& x, const at::Tensor& norm_weight, double eps) {
  return forward(rms_norm(x, norm_weight, eps));
}

at::Tensor Linear::forward_silu_mul(const at::Tensor& gate_up) { return forward(silu_mul(gate_up)); }

void GatedMlp::visit(const TensorVisitor& fn) const {
  gate_up_.visit(fn);
  down_.visit(fn);
}

MlpFactory gated_mlp_factory() {
  return [](const LayerProjections& p, const LinearFactory& linear, const FusePolicy& fuse,
            const WeightReader& reader) -> std::unique_ptr<MlpBlock> {
    // Sequenced: the linear factory sees gate/up before down, in checkpoint order.
    Projection gate_up = make_projection(p.gate_up, linear, fuse, reader);
    Projection down = make_projection(p.down, linear, fuse, reader);
    return std::make_unique<GatedMlp>(std::move(gate_up), std::move(down));
  };
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
#ifdef FP8RL_WITH_CUDA
  if (fused_applies(x, weight) && weight.is_contiguous() && weight.numel() == x.size(-1)) {
    at::Tensor out = at::empty(x.sizes(), x.options());
    cuda::rms_norm_rows(rows_of(x), weight.data_ptr(), static_cast<float>(eps), out.data_ptr(),
                        at::cuda::getCurrentCUDAStream(x.device().index()).stream());
    return out;
  }
#endif
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor var = xf.pow(2).mean({-1}, /*keepdim=*/true);
  return weight * (xf * at::rsqrt(var + eps)).to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight,
                                               double eps) {
#ifdef FP8RL_WITH_CUDA
  if (fused_applies(x, weight) && x.dim() == 2 && y.sizes() == x.sizes() && y.scalar_type() == x.scalar_type() &&
      y.device() == x.device() && y.stride(-1) == 1 && weight.is_contiguous() && weight.numel() == x.size(1)) {
    at::Tensor sum = at::empty(x.sizes(), x.options()), out = at::empty(x.sizes(), x.options());
    const cuda::AddRmsNormArgs a{x.data_ptr(), y.data_ptr(), x.size(0), x.size(1), x.stride(0), y.stride(0),
                                 weight.data_ptr(), static_cast<float>(eps), sum.data_ptr(), out.data_ptr(),
                                 x.scalar_type() == at::kBFloat16};
    if (cuda::add_rms_norm_rows(a, at::cuda::getCurrentCUDAStream(x.device().index()).stream()))
      return {std::move(sum), std::move(out)};
  }
#endif
  at::Tensor sum = x + y;
  at::Tensor normed = rms_norm(sum, weight, eps);
  return {std::move(sum), std::move(normed)};
}

at::Tensor rope_inv_freq(const ModelConfig& config, at::Device device) {
  const int64_t dim = config.shape.head_dim;
  // HF: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)), all float32.
  const at::Tensor exponent = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong).device(device)).to(at::kFloat) /
                              static_cast<double>(dim);
  at::Tensor inv_freq = at::reciprocal(at::pow(config.rope_theta, exponent));
  FP8RL_CHECK(inv_freq.scalar_type() == at::kFloat, "rope_inv_freq: expected float32");
  const RopeScaling& r = config.rope_scaling;
  if (r.type == "llama3") {
    // transformers/modeling_rope_utils.py _compute_llama3_parameters, op for op.
    const double old_context_len = static_cast<double>(r.original_max_position_embeddings);
    const double low_freq_wavelen = old_context_len / r.low_freq_factor;
    const double high_freq_wavelen = old_context_len / r.high_freq_factor;
    const at::Tensor wavelen = 2 * std::numbers::pi / inv_freq;
    at::Tensor inv_freq_llama = at::where(wavelen > low_freq_wavelen, inv_freq / r.factor, inv_freq);
    const at::Tensor smooth_factor =
        (old_context_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    const at::Tensor smoothed = (1 - smooth_factor) * inv_freq_llama / r.factor + smooth_factor * inv_freq_llama;
    const at::Tensor is_medium = at::logical_not(wavelen < high_freq_wavelen) & at::logical_not(wavelen > low_freq_wavelen);
    inv_freq = at::where(is_medium, smoothed, inv_freq_llama);
  } else {
    FP8RL_CHECK(r.type == "default", "rope_inv_freq: unknown rope type " + r.type);
  }
  return inv_freq;
}

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& positions,
                                               at::ScalarType dtype) {
  // HF: inv_freq[None, :, None] @ positions[:, None, :] in float32 -- an outer product, so one
  // float32 multiply per element, as here.
  const at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq.to(positions.device());  // [N, D/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);                                                  // [N, D]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
#ifdef FP8RL_WITH_CUDA
  if (fused_applies(x, cos) && x.dim() == 3 && cos.is_contiguous() && sin.is_contiguous() && sin.scalar_type() == cos.scalar_type() &&
      cos.dim() == 2 && cos.size(0) == x.size(0) && cos.size(1) == x.size(2) && x.size(2) % 2 == 0) {
    at::Tensor out = at::empty(x.sizes(), x.options());
    cuda::rope_rows(rows_of(x), cos.data_ptr(), sin.data_ptr(), out.data_ptr(),
                    at::cuda::getCurrentCUDAStream(x.device().index()).stream());
    return out;
  }
#endif
  const int64_t half = x.size(-1) / 2;
  const at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  const at::Tensor rotated = at::cat({-x2, x1}, -1);
  return x * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2);  // cos/sin [N, 1, D] over the heads
}

namespace {

// qk_norm_rope's fused kernel, with `store` when given (qk_norm_rope_store); nullopt where it does
// not take the inputs (nothing launched).
std::optional<std::pair<at::Tensor, at::Tensor>> fused_qk_norm_rope(const at::Tensor& q, const at::Tensor& k,
                                                                    const at::Tensor& q_weight,
                                                                    const at::Tensor& k_weight, double eps,
                                                                    const at::Tensor& cos, const at::Tensor& sin,
                                                                    const at::Tensor& v, const KvStoreTarget* store) {
#ifdef FP8RL_WITH_CUDA
  auto weight_ok = [&](const at::Tensor& w) {
    return !w.defined() || (w.scalar_type() == q.scalar_type() && w.is_contiguous() && w.numel() == q.size(-1));
  };
  if (!(fused_applies(q, cos) && fused_applies(k, cos) && q.dim() == 3 && k.dim() == 3 && k.size(0) == q.size(0) &&
        k.size(2) == q.size(2) && cos.is_contiguous() && sin.is_contiguous() &&
        sin.scalar_type() == cos.scalar_type() &&
        cos.dim() == 2 && cos.size(0) == q.size(0) && cos.size(1) == q.size(2) && weight_ok(q_weight) &&
        weight_ok(k_weight)))
    return std::nullopt;
  cuda::KvStoreArgs st;
  if (store) {
    // The cache's element type: k's dtype, or E4M3 bytes with both scales (float32 on k's device).
    const bool fp8 = store->k_scale.defined();
    auto cache_ok = [&](const at::Tensor& c) {
      return c.defined() && c.device() == k.device() && c.is_contiguous() && c.dim() == 3 && c.size(1) == k.size(1) &&
             c.size(2) == k.size(2) && c.scalar_type() == (fp8 ? at::kByte : k.scalar_type());
    };
    auto scale_ok = [&](const at::Tensor& s) {
      return !fp8 || (s.defined() && s.scalar_type() == at::kFloat && s.device() == k.device() && s.numel() >= 1);
    };
    if (!(fused_applies(v, cos) && v.device() == k.device() && v.dim() == 3 && v.sizes() == k.sizes() &&
          cache_ok(store->k_cache) && cache_ok(store->v_cache) && scale_ok(store->k_scale) &&
          scale_ok(store->v_scale) && store->slots.defined() && store->slots.device() == k.device() &&
          store->slots.scalar_type() == at::kLong && store->slots.is_contiguous() &&
          store->slots.numel() == k.size(0)))
      return std::nullopt;
    st.v = rows_of(v);
    st.slots = store->slots.data_ptr<int64_t>();
    st.k_cache = store->k_cache.data_ptr();
    st.v_cache = store->v_cache.data_ptr();
    st.cache_bases = store->cache_bases;
    st.k_scale = fp8 ? store->k_scale.data_ptr<float>() : nullptr;
    st.v_scale = fp8 ? store->v_scale.data_ptr<float>() : nullptr;
  }
  at::Tensor q_out = at::empty(q.sizes(), q.options()), k_out = at::empty(k.sizes(), k.options());
  cuda::QkNormRopeArgs a{rows_of(q),
                         rows_of(k),
                         q_weight.defined() ? q_weight.data_ptr() : nullptr,
                         k_weight.defined() ? k_weight.data_ptr() : nullptr,
                         static_cast<float>(eps),
                         cos.data_ptr(),
                         sin.data_ptr(),
                         q_out.data_ptr(),
                         k_out.data_ptr(),
                         st};
  // false: a layout the kernel does not take (unaligned rows, head_dim % 8 != 0 or > 256).
  if (cuda::qk_norm_rope_rows(a, at::cuda::getCurrentCUDAStream(q.device().index()).stream()))
    return std::pair{q_out, k_out};
#else
  (void)q;
  (void)k;
  (void)q_weight;
  (void)k_weight;
  (void)eps;
  (void)cos;
  (void)sin;
  (void)v;
  (void)store;
#endif
  return std::nullopt;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> qk_norm_rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& q_weight,
                                               const at::Tensor& k_weight, double eps, const at::Tensor& cos,
                                               const at::Tensor& sin) {
  if (auto fused = fused_qk_norm_rope(q, k, q_weight, k_weight, eps, cos, sin, at::Tensor(), nullptr)) return *fused;
  const at::Tensor qn = q_weight.defined() ? rms_norm(q, q_weight, eps) : q;
  const at::Tensor kn = k_weight.defined() ? rms_norm(k, k_weight, eps) : k;
  return {apply_rope(qn, cos, sin), apply_rope(kn, cos, sin)};
}

std::optional<std::pair<at::Tensor, at::Tensor>> qk_norm_rope_store(const at::Tensor& q, const at::Tensor& k,
                                                                    const at::Tensor& v, const at::Tensor& q_weight,
                                                                    const at::Tensor& k_weight, double eps,
                                                                    const at::Tensor& cos, const at::Tensor& sin,
                                                                    const KvStoreTarget& store) {
  return fused_qk_norm_rope(q, k, q_weight, k_weight, eps, cos, sin, v, &store);
}

}  // namespace fp8rl::model
