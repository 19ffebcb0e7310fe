#include "core/model/layers.h"

#include <cmath>
#include <numbers>

#include "core/error.h"
#include "core/log.h"

namespace fp8rl::model {

DenseLinear::DenseLinear(at::Tensor weight, at::Tensor bias) : weight_(std::move(weight)), bias_(std::move(bias)) {
  FP8RL_CHECK(weight_.dim() == 2, "DenseLinear: weight must be [out, in]");
  FP8RL_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == weight_.size(0)),
              "DenseLinear: bias must be [out]");
}

at::Tensor DenseLinear::forward(const at::Tensor& x) {
  return bias_.defined() ? at::linear(x, weight_, bias_) : at::linear(x, weight_);
}

NamedTensors DenseLinear::parameters() const {
  NamedTensors out{{"weight", weight_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

LinearFactory dense_linear_factory() {
  return [](const std::string&, at::Tensor weight, at::Tensor bias) -> std::unique_ptr<Linear> {
    return std::make_unique<DenseLinear>(std::move(weight), std::move(bias));
  };
}

GatedMlp::GatedMlp(std::unique_ptr<Linear> gate, std::unique_ptr<Linear> up, std::unique_ptr<Linear> down)
    : gate_(std::move(gate)), up_(std::move(up)), down_(std::move(down)) {}

at::Tensor GatedMlp::forward(const at::Tensor& x) {
  return down_->forward(at::silu(gate_->forward(x)) * up_->forward(x));
}

NamedTensors GatedMlp::parameters() const {
  NamedTensors out;
  for (const auto& [name, lin] : {std::pair{"gate_proj.", gate_.get()}, std::pair{"up_proj.", up_.get()},
                                  std::pair{"down_proj.", down_.get()}})
    for (auto& [n, t] : lin->parameters()) out.emplace_back(name + n, t);
  return out;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor var = xf.pow(2).mean({-1}, /*keepdim=*/true);
  return weight * (xf * at::rsqrt(var + eps)).to(x.scalar_type());
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
  const int64_t half = x.size(-1) / 2;
  const at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  const at::Tensor rotated = at::cat({-x2, x1}, -1);
  return x * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2);  // cos/sin [N, 1, D] over the heads
}

}  // namespace fp8rl::model
