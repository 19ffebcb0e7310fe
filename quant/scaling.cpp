#include "quant/scaling.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/log.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "quant/cuda/scaling_kernels.h"
#endif

namespace fp8rl {

WeightScaling parse_weight_scaling(const std::string& name) {
  if (name == "tensor") return WeightScaling::tensor;
  if (name == "channel") return WeightScaling::channel;
  if (name == "block") return WeightScaling::block;
  throw ConfigError("weight scaling '" + name + "' is not one of: tensor, channel, block");
}

ActScaling parse_act_scaling(const std::string& name) {
  if (name == "tensor") return ActScaling::tensor;
  if (name == "token") return ActScaling::token;
  if (name == "group") return ActScaling::group;
  throw ConfigError("activation scaling '" + name + "' is not one of: tensor, token, group");
}

const char* to_string(WeightScaling s) {
  return s == WeightScaling::tensor ? "tensor" : s == WeightScaling::channel ? "channel" : "block";
}
const char* to_string(ActScaling s) {
  return s == ActScaling::tensor ? "tensor" : s == ActScaling::token ? "token" : "group";
}

float scale_from_amax(float amax, float fp8_max, bool pow2) {
  if (!(amax > 0)) return 1.0f;
  float s = amax / fp8_max;
  if (!pow2) return s;
  // Round up to a power of two on the bits, so CPU and GPU agree exactly: a float whose
  // mantissa bits are zero is already 2^e; otherwise take 2^(e+1).
  if (s < 1.17549435e-38f) return 1.17549435e-38f;  // FLT_MIN = 2^-126, itself a power of two
  uint32_t bits;
  std::memcpy(&bits, &s, 4);
  if (bits & 0x007FFFFFu) bits = (bits & 0x7F800000u) + 0x00800000u;
  std::memcpy(&s, &bits, 4);
  return s;
}

int64_t Fp8Weight::nbytes() const {
  return data.numel() * static_cast<int64_t>(data.element_size()) + scale.numel() * 4;
}

namespace {

at::ScalarType fp8_scalar_type(Fp8Format f) { return f == Fp8Format::e4m3 ? at::kFloat8_e4m3fn : at::kFloat8_e5m2; }

void check_matrix(const at::Tensor& t, const char* name) {
  FP8RL_CHECK(t.dim() == 2, cat(name, " must be 2-D, got shape ", t.sizes()));
  FP8RL_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16,
              cat(name, " must be float32 or bfloat16, got ", t.scalar_type()));
}

void require_finite_cpu(const at::Tensor& t, const std::string& what) {
  if (t.numel() > 0 && !at::isfinite(t).all().item<bool>())
    throw RuntimeFailure(cat(what, " of shape ", t.sizes(), " holds NaN or inf; refusing to quantize it"));
}

// The reference for every granularity: x [R, C] -> data [Rp, Cp] with one scale per tile of
// tr x tc (tiles cover the padded matrix; padding counts as zeros). Scales are returned in
// tile-grid order [Rp/tr, Cp/tc].
std::pair<at::Tensor, at::Tensor> quantize_tiles_reference(const at::Tensor& x_in, int64_t Rp, int64_t Cp, int64_t tr,
                                                           int64_t tc, Fp8Format fmt, bool pow2) {
  at::Tensor x = x_in.to(at::kCPU, at::kFloat).contiguous();
  const int64_t R = x.size(0), C = x.size(1);
  const int64_t gr = tr > 0 ? Rp / tr : 0, gc = Cp / tc;
  const float* src = x.data_ptr<float>();
  std::vector<float> amax(static_cast<size_t>(gr * gc), 0.0f), inv(static_cast<size_t>(gr * gc));
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      float& a = amax[static_cast<size_t>((r / tr) * gc + c / tc)];
      a = std::fmax(a, std::fabs(src[r * C + c]));
    }
  at::Tensor scale = at::empty({gr, gc}, at::kFloat);
  float* s = scale.data_ptr<float>();
  const float fmax = fp8_spec(fmt).max;
  for (int64_t i = 0; i < gr * gc; ++i) {
    s[i] = scale_from_amax(amax[static_cast<size_t>(i)], fmax, pow2);
    inv[static_cast<size_t>(i)] = 1.0f / s[i];
  }
  at::Tensor data = at::empty({Rp, Cp}, at::TensorOptions().dtype(fp8_scalar_type(fmt)));
  auto* dst = static_cast<uint8_t*>(data.data_ptr());
  for (int64_t r = 0; r < Rp; ++r)
    for (int64_t c = 0; c < Cp; ++c) {
      const float v = (r < R && c < C) ? src[r * C + c] : 0.0f;
      dst[r * Cp + c] = float_to_fp8(v * inv[static_cast<size_t>((r / tr) * gc + c / tc)], fmt);
    }
  return {data, scale};
}

}  // namespace

Fp8Weight quantize_weight_reference(const at::Tensor& w, WeightScaling scaling, Fp8Format fmt, bool pow2) {
  check_matrix(w, "weight");
  const int64_t N = w.size(0), K = w.size(1);
  const int64_t Np = round_up(N, kFp8Block), Kp = padded_k(K, scaling == WeightScaling::block);
  const int64_t tr = scaling == WeightScaling::tensor ? Np : scaling == WeightScaling::channel ? 1 : kFp8Block;
  const int64_t tc = scaling == WeightScaling::block ? kFp8Block : Kp;
  auto [data, scale] = quantize_tiles_reference(w, Np, Kp, tr, tc, fmt, pow2);
  if (scaling != WeightScaling::block) scale = scale.reshape({-1});
  return Fp8Weight{data, scale, N, K, fmt, scaling, pow2};
}

Fp8Activation quantize_activation_reference(const at::Tensor& x, ActScaling scaling, Fp8Format fmt, bool pow2) {
  check_matrix(x, "activation");
  const int64_t M = x.size(0), K = x.size(1), Kp = padded_k(K, scaling == ActScaling::group);
  if (scaling == ActScaling::tensor) {
    auto [data, scale] = quantize_tiles_reference(x, M, Kp, M, Kp, fmt, pow2);
    if (M == 0) scale = at::ones({1, 1}, at::kFloat);
    return Fp8Activation{data, scale.reshape({1}), M, K, fmt, scaling};
  }
  if (scaling == ActScaling::token) {
    auto [data, scale] = quantize_tiles_reference(x, M, Kp, 1, Kp, fmt, pow2);
    return Fp8Activation{data, scale.reshape({M}), M, K, fmt, scaling};
  }
  const int64_t Mp = round_up(M, kGroupRowAlign);
  auto [data, scale] = quantize_tiles_reference(x, Mp, Kp, 1, kFp8Block, fmt, pow2);
  return Fp8Activation{data, scale.t().contiguous(), M, K, fmt, scaling};  // [Mp, Kp/128] -> [Kp/128, Mp]
}

Fp8Weight quantize_weight(const at::Tensor& w, WeightScaling scaling, Fp8Format fmt, bool pow2, const std::string& what) {
  check_matrix(w, "weight");
  if (w.device().is_cpu()) {
    require_finite_cpu(w, what);
    return quantize_weight_reference(w, scaling, fmt, pow2);
  }
#ifdef FP8RL_WITH_CUDA
  FP8RL_CHECK(w.device().is_cuda(), cat("unsupported device ", w.device()));
  at::Tensor x = w.contiguous();
  const int64_t N = x.size(0), K = x.size(1);
  const int64_t Np = round_up(N, kFp8Block), Kp = padded_k(K, scaling == WeightScaling::block);
  auto opts = x.options();
  Fp8Weight out{at::empty({Np, Kp}, opts.dtype(fp8_scalar_type(fmt))), {}, N, K, fmt, scaling, pow2};
  at::Tensor flag = at::zeros({1}, opts.dtype(at::kInt));
  cuda::QuantArgs a{x.data_ptr(), x.scalar_type() == at::kBFloat16, N, K, static_cast<uint8_t*>(out.data.data_ptr()),
                    Np, Kp, nullptr, fp8_spec(fmt).max, fmt == Fp8Format::e5m2, pow2, flag.data_ptr<int>()};
  auto stream = at::cuda::getCurrentCUDAStream();
  if (scaling == WeightScaling::tensor) {
    out.scale = at::empty({1}, opts.dtype(at::kFloat));
    a.scale = out.scale.data_ptr<float>();
    at::Tensor amax = at::zeros({1}, opts.dtype(at::kInt));
    cuda::quantize_tensor(a, reinterpret_cast<unsigned*>(amax.data_ptr<int>()), stream);
  } else {
    const bool block = scaling == WeightScaling::block;
    out.scale = block ? at::empty({Np / kFp8Block, Kp / kFp8Block}, opts.dtype(at::kFloat))
                      : at::empty({Np}, opts.dtype(at::kFloat));
    a.scale = out.scale.data_ptr<float>();
    cuda::quantize_tiles(a, block ? kFp8Block : 1, block ? kFp8Block : Kp, stream);
  }
  if (flag.item<int>() != 0)  // one sync per weight: weights are quantized once per update
    throw RuntimeFailure(cat(what, " of shape ", w.sizes(), " holds NaN or inf; refusing to quantize it"));
  return out;
#else
  throw RuntimeFailure(cat("quantize_weight: tensor on ", w.device(), " but fp8rl was built without CUDA"));
#endif
}

Fp8Activation quantize_activation(const at::Tensor& x_in, ActScaling scaling, Fp8Format fmt, bool pow2,
                                  const at::Tensor& nonfinite) {
  check_matrix(x_in, "activation");
  if (x_in.device().is_cpu()) {
    require_finite_cpu(x_in, "activation");
    return quantize_activation_reference(x_in, scaling, fmt, pow2);
  }
#ifdef FP8RL_WITH_CUDA
  FP8RL_CHECK(x_in.device().is_cuda(), cat("unsupported device ", x_in.device()));
  at::Tensor x = x_in.contiguous();
  const int64_t M = x.size(0), K = x.size(1), Kp = padded_k(K, scaling == ActScaling::group);
  const int64_t Mp = scaling == ActScaling::group ? round_up(M, kGroupRowAlign) : M;
  auto opts = x.options();
  Fp8Activation out{at::empty({Mp, Kp}, opts.dtype(fp8_scalar_type(fmt))), {}, M, K, fmt, scaling};
  int* flag = nullptr;
  if (nonfinite.defined()) {
    FP8RL_CHECK(nonfinite.scalar_type() == at::kInt && nonfinite.device() == x.device(),
                "nonfinite flag must be int32 on the activation's device");
    flag = nonfinite.data_ptr<int>();
  }
  cuda::QuantArgs a{x.data_ptr(), x.scalar_type() == at::kBFloat16, M, K, static_cast<uint8_t*>(out.data.data_ptr()),
                    Mp, Kp, nullptr, fp8_spec(fmt).max, fmt == Fp8Format::e5m2, pow2, flag};
  auto stream = at::cuda::getCurrentCUDAStream();
  switch (scaling) {
    case ActScaling::tensor: {
      out.scale = at::empty({1}, opts.dtype(at::kFloat));
      a.scale = out.scale.data_ptr<float>();
      at::Tensor amax = at::zeros({1}, opts.dtype(at::kInt));
      cuda::quantize_tensor(a, reinterpret_cast<unsigned*>(amax.data_ptr<int>()), stream);
      break;
    }
    case ActScaling::token:
      out.scale = at::empty({M}, opts.dtype(at::kFloat));
      a.scale = out.scale.data_ptr<float>();
      cuda::quantize_tiles(a, 1, Kp, stream);
      break;
    case ActScaling::group:
      out.scale = at::empty({Kp / kFp8Block, Mp}, opts.dtype(at::kFloat));
      a.scale = out.scale.data_ptr<float>();
      cuda::quantize_groups_1x128(a, stream);
      break;
  }
  return out;
#else
  (void)nonfinite;
  throw RuntimeFailure(cat("quantize_activation: tensor on ", x_in.device(), " but fp8rl was built without CUDA"));
#endif
}

Fp8Weight transpose_weight(const Fp8Weight& w) {
  FP8RL_CHECK(w.scaling != WeightScaling::channel,
              "transpose_weight: per-output-channel scales do not transpose exactly; use block or tensor scaling");
  // Transposed through a byte view: the copy kernels move bytes, whatever the float8 flavour.
  at::Tensor data = w.data.view(at::kByte).t().contiguous().view(w.data.scalar_type());
  at::Tensor scale = w.scaling == WeightScaling::block ? w.scale.t().contiguous() : w.scale;
  return Fp8Weight{data, scale, w.in_features, w.out_features, w.fmt, w.scaling, w.pow2};
}

at::Tensor expand_scale(const Fp8Weight& w) {
  const int64_t Np = w.data.size(0), Kp = w.data.size(1);
  switch (w.scaling) {
    case WeightScaling::tensor: return w.scale.reshape({1, 1}).expand({Np, Kp});
    case WeightScaling::channel: return w.scale.reshape({Np, 1}).expand({Np, Kp});
    case WeightScaling::block:
      return w.scale.repeat_interleave(kFp8Block, 0).repeat_interleave(kFp8Block, 1);
  }
  return {};
}

at::Tensor expand_scale(const Fp8Activation& x) {
  const int64_t M = x.data.size(0), Kp = x.data.size(1);
  switch (x.scaling) {
    case ActScaling::tensor: return x.scale.reshape({1, 1}).expand({M, Kp});
    case ActScaling::token: return x.scale.reshape({M, 1}).expand({M, Kp});
    case ActScaling::group: return x.scale.t().repeat_interleave(kFp8Block, 1);
  }
  return {};
}

// The padding is cut off before converting and multiplying: on the CPU path (the reference
// GEMM) a small K padded to 512 would otherwise multiply up to 8x the elements.
at::Tensor dequantize(const Fp8Weight& w) {
  auto cut = [&](const at::Tensor& t) { return t.narrow(0, 0, w.out_features).narrow(1, 0, w.in_features); };
  return cut(w.data).to(at::kFloat) * cut(expand_scale(w));
}

at::Tensor dequantize(const Fp8Activation& x) {
  auto cut = [&](const at::Tensor& t) { return t.narrow(0, 0, x.rows).narrow(1, 0, x.in_features); };
  return cut(x.data).to(at::kFloat) * cut(expand_scale(x));
}

}  // namespace fp8rl
