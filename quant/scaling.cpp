#include "quant/scaling.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/util/error.h"
#include "core/util/log.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "quant/cuda/scaling_kernels.h"
#endif

namespace fp8rl::quant {

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
  // At least FLT_MIN (2^-126, itself a power of two): below it 1 / s overflows to inf (amax under
  // ~5e-36), and the group's zeros and padding would quantize to NaN (0 * inf).
  if (s < 1.17549435e-38f) return 1.17549435e-38f;
  if (!pow2) return s;
  // Round up to a power of two on the bits, so CPU and GPU agree exactly: a float whose
  // mantissa bits are zero is already 2^e; otherwise take 2^(e+1).
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

// The reference for every granularity, writing into given storage: x [R, C] (CPU, contiguous,
// T = float or c10::BFloat16) -> dst [Rp, Cp] fp8 bytes with one scale per tile of tr x tc
// (tiles cover the padded matrix; padding counts as zeros), scales in tile-grid order
// [Rp/tr, Cp/tc]. bf16 is read directly (its conversion to float is exact): no float copy of
// the input. Returns whether x holds NaN/inf (found in the amax pass, no extra pass).
template <class T>
bool quantize_tiles_cpu(const T* src, int64_t R, int64_t C, int64_t Rp, int64_t Cp, int64_t tr, int64_t tc,
                        Fp8Format fmt, bool pow2, uint8_t* dst, float* s) {
  const int64_t gr = tr > 0 ? Rp / tr : 0, gc = Cp / tc;
  std::vector<float> amax(static_cast<size_t>(gr * gc), 0.0f), inv(static_cast<size_t>(gr * gc));
  bool nonfinite = false;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float v = static_cast<float>(src[r * C + c]);
      nonfinite |= !std::isfinite(v);
      float& a = amax[static_cast<size_t>((r / tr) * gc + c / tc)];
      a = std::fmax(a, std::fabs(v));
    }
  const float fmax = fp8_spec(fmt).max;
  for (int64_t i = 0; i < gr * gc; ++i) {
    s[i] = scale_from_amax(amax[static_cast<size_t>(i)], fmax, pow2);
    inv[static_cast<size_t>(i)] = 1.0f / s[i];
  }
  for (int64_t r = 0; r < Rp; ++r)
    for (int64_t c = 0; c < Cp; ++c) {
      const float v = (r < R && c < C) ? static_cast<float>(src[r * C + c]) : 0.0f;
      dst[r * Cp + c] = float_to_fp8(v * inv[static_cast<size_t>((r / tr) * gc + c / tc)], fmt);
    }
  return nonfinite;
}

// x: CPU, contiguous, float32 or bfloat16 (check_matrix).
bool quantize_tiles_cpu(const at::Tensor& x, int64_t Rp, int64_t Cp, int64_t tr, int64_t tc, Fp8Format fmt, bool pow2,
                        uint8_t* dst, float* s) {
  const int64_t R = x.size(0), C = x.size(1);
  if (x.scalar_type() == at::kBFloat16)
    return quantize_tiles_cpu(x.data_ptr<c10::BFloat16>(), R, C, Rp, Cp, tr, tc, fmt, pow2, dst, s);
  return quantize_tiles_cpu(x.data_ptr<float>(), R, C, Rp, Cp, tr, tc, fmt, pow2, dst, s);
}

// Allocating form: data [Rp, Cp], scales [Rp/tr, Cp/tc].
std::pair<at::Tensor, at::Tensor> quantize_tiles_reference(const at::Tensor& x_in, int64_t Rp, int64_t Cp, int64_t tr,
                                                           int64_t tc, Fp8Format fmt, bool pow2) {
  at::Tensor x = x_in.to(at::kCPU).contiguous();
  const int64_t gr = tr > 0 ? Rp / tr : 0, gc = Cp / tc;
  at::Tensor scale = at::empty({gr, gc}, at::kFloat);
  at::Tensor data = at::empty({Rp, Cp}, at::TensorOptions().dtype(fp8_scalar_type(fmt)));
  quantize_tiles_cpu(x, Rp, Cp, tr, tc, fmt, pow2, static_cast<uint8_t*>(data.data_ptr()), scale.data_ptr<float>());
  return {data, scale};
}

// Tile shape of a weight granularity on the padded [Np, Kp] matrix.
std::pair<int64_t, int64_t> weight_tile(WeightScaling scaling, int64_t Np, int64_t Kp) {
  const int64_t tr = scaling == WeightScaling::tensor ? Np : scaling == WeightScaling::channel ? 1 : kFp8Block;
  const int64_t tc = scaling == WeightScaling::block ? kFp8Block : Kp;
  return {tr, tc};
}

// Writes through raw pointers bypass autograd's version counters: bump them, so that a graph
// that saved these tensors (Fp8Linear's backward) sees the update and refuses to use stale
// values. Inference tensors have no counter.
void mark_written(const at::Tensor& t) {
  if (!t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
}

}  // namespace

Fp8Weight quantize_weight_reference(const at::Tensor& w, WeightScaling scaling, Fp8Format fmt, bool pow2) {
  check_matrix(w, "weight");
  const int64_t N = w.size(0), K = w.size(1);
  const int64_t Np = round_up(N, kFp8Block), Kp = padded_k(K, scaling == WeightScaling::block);
  const auto [tr, tc] = weight_tile(scaling, Np, Kp);
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

Fp8Weight empty_fp8_weight(int64_t N, int64_t K, WeightScaling scaling, Fp8Format fmt, bool pow2, at::Device device) {
  const int64_t Np = round_up(N, kFp8Block), Kp = padded_k(K, scaling == WeightScaling::block);
  const auto opts = at::TensorOptions().device(device);
  at::Tensor scale = scaling == WeightScaling::tensor    ? at::empty({1}, opts.dtype(at::kFloat))
                     : scaling == WeightScaling::channel ? at::empty({Np}, opts.dtype(at::kFloat))
                                                         : at::empty({Np / kFp8Block, Kp / kFp8Block}, opts.dtype(at::kFloat));
  return Fp8Weight{at::empty({Np, Kp}, opts.dtype(fp8_scalar_type(fmt))), scale, N, K, fmt, scaling, pow2};
}

void throw_if_nonfinite(const at::Tensor& nonfinite, const std::string& what) {
  if (nonfinite.item<int>() != 0)  // the one host sync
    throw RuntimeFailure(cat(what, " holds NaN or inf; refusing to quantize it"));
}

void quantize_weight_into(const at::Tensor& w, Fp8Weight& out, const at::Tensor& nonfinite) {
  check_matrix(w, "weight");
  const int64_t N = out.out_features, K = out.in_features;
  FP8RL_CHECK(w.size(0) == N && w.size(1) == K,
              cat("quantize_weight_into: expected [", N, ", ", K, "], got ", w.sizes()));
  const int64_t Np = round_up(N, kFp8Block), Kp = padded_k(K, out.scaling == WeightScaling::block);
  const auto [tr, tc] = weight_tile(out.scaling, Np, Kp);
  FP8RL_CHECK(out.data.dim() == 2 && out.data.size(0) == Np && out.data.size(1) == Kp && out.data.is_contiguous() &&
                  out.data.scalar_type() == fp8_scalar_type(out.fmt),
              cat("quantize_weight_into: FP8 storage ", out.data.sizes(), " ", out.data.scalar_type(),
                  " is not a contiguous [", Np, ", ", Kp, "] ", fp8_scalar_type(out.fmt)));
  FP8RL_CHECK(out.scale.scalar_type() == at::kFloat && out.scale.is_contiguous() &&
                  out.scale.numel() == (Np / tr) * (Kp / tc) && out.scale.device() == out.data.device(),
              cat("quantize_weight_into: scale storage ", out.scale.sizes(), " does not fit ", to_string(out.scaling),
                  " scaling of [", Np, ", ", Kp, "]"));
  FP8RL_CHECK(nonfinite.defined() && nonfinite.scalar_type() == at::kInt && nonfinite.numel() >= 1 &&
                  nonfinite.device() == out.data.device(),
              "quantize_weight_into: nonfinite flag must be int32 on the weight's device");
  // No copy when w already lives on the weight's device and is contiguous (the intended use).
  const at::Tensor x = w.to(out.data.device()).contiguous();
  if (x.device().is_cpu()) {
    if (quantize_tiles_cpu(x, Np, Kp, tr, tc, out.fmt, out.pow2, static_cast<uint8_t*>(out.data.data_ptr()),
                           out.scale.data_ptr<float>()))
      nonfinite.data_ptr<int>()[0] = 1;  // as the kernels do: a plain store, no autograd op
  } else {
#ifdef FP8RL_WITH_CUDA
    FP8RL_CHECK(x.device().is_cuda(), cat("unsupported device ", x.device()));
    cuda::QuantArgs a{x.data_ptr(), x.scalar_type() == at::kBFloat16, N, K, static_cast<uint8_t*>(out.data.data_ptr()),
                      Np, Kp, out.scale.data_ptr<float>(), fp8_spec(out.fmt).max, out.fmt == Fp8Format::e5m2,
                      out.pow2, nonfinite.data_ptr<int>()};
    auto stream = at::cuda::getCurrentCUDAStream();
    if (out.scaling == WeightScaling::tensor) {
      at::Tensor amax = at::zeros({1}, x.options().dtype(at::kInt));  // 4 bytes of scratch
      cuda::quantize_tensor(a, reinterpret_cast<unsigned*>(amax.data_ptr<int>()), stream);
    } else {
      cuda::quantize_tiles(a, tr, tc, stream);
    }
#else
    throw RuntimeFailure(cat("quantize_weight_into: tensor on ", x.device(), " but fp8rl was built without CUDA"));
#endif
  }
  mark_written(out.data);
  mark_written(out.scale);
}

Fp8Weight quantize_weight(const at::Tensor& w, WeightScaling scaling, Fp8Format fmt, bool pow2, const std::string& what) {
  check_matrix(w, "weight");
  if (w.device().is_cpu()) {
    require_finite_cpu(w, what);
    return quantize_weight_reference(w, scaling, fmt, pow2);
  }
#ifdef FP8RL_WITH_CUDA
  FP8RL_CHECK(w.device().is_cuda(), cat("unsupported device ", w.device()));
  Fp8Weight out = empty_fp8_weight(w.size(0), w.size(1), scaling, fmt, pow2, w.device());
  at::Tensor flag = at::zeros({1}, w.options().dtype(at::kInt));
  quantize_weight_into(w, out, flag);
  // One sync per weight: weights are quantized once at load. Per-step requantization goes
  // through quantize_weight_into with one flag for all matrices instead.
  throw_if_nonfinite(flag, cat(what, " of shape ", w.sizes()));
  return out;
#else
  throw RuntimeFailure(cat("quantize_weight: tensor on ", w.device(), " but fp8rl was built without CUDA"));
#endif
}

#ifdef FP8RL_WITH_CUDA
namespace {

// The kernels' pointer to an activation's optional non-finite flag (int32 [1] on its device).
int* activation_flag(const at::Tensor& nonfinite, at::Device device) {
  if (!nonfinite.defined()) return nullptr;
  FP8RL_CHECK(nonfinite.scalar_type() == at::kInt && nonfinite.device() == device,
              "nonfinite flag must be int32 on the activation's device");
  return nonfinite.data_ptr<int>();
}

}  // namespace
#endif

Fp8Activation quantize_activation(const at::Tensor& x_in, ActScaling scaling, Fp8Format fmt, bool pow2,
                                  const at::Tensor& nonfinite, const std::string& what) {
  check_matrix(x_in, "activation");
  if (x_in.device().is_cpu()) {
    require_finite_cpu(x_in, what);
    return quantize_activation_reference(x_in, scaling, fmt, pow2);
  }
#ifdef FP8RL_WITH_CUDA
  FP8RL_CHECK(x_in.device().is_cuda(), cat("unsupported device ", x_in.device()));
  at::Tensor x = x_in.contiguous();
  const int64_t M = x.size(0), K = x.size(1), Kp = padded_k(K, scaling == ActScaling::group);
  const int64_t Mp = scaling == ActScaling::group ? round_up(M, kGroupRowAlign) : M;
  auto opts = x.options();
  Fp8Activation out{at::empty({Mp, Kp}, opts.dtype(fp8_scalar_type(fmt))), {}, M, K, fmt, scaling};
  int* flag = activation_flag(nonfinite, x.device());
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

#ifdef FP8RL_WITH_CUDA
namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// A 2-D bfloat16 CUDA tensor whose rows the fused kernels can read 8 elements at a time.
bool fused_input_ok(const at::Tensor& x) {
  return x.is_cuda() && x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.stride(1) == 1 && x.size(1) % 8 == 0 &&
         x.stride(0) % 8 == 0 && aligned16(x.data_ptr());
}

// The fused RMSNorm's weight: bfloat16 [cols of x], contiguous, 16-byte aligned, on x's device;
// and rows above 1024 elements, where rms_norm's kernel uses a block per row, whose order of
// additions the fused kernel repeats (core/model/cuda/fused_rows.cuh).
bool fused_norm_ok(const at::Tensor& x, const at::Tensor& weight) {
  return x.size(1) > 1024 && weight.scalar_type() == at::kBFloat16 && weight.is_contiguous() &&
         weight.numel() == x.size(1) && weight.device() == x.device() && aligned16(weight.data_ptr());
}

// The activation the fused kernels fill, group-scaled ([Mp, Kp], scales [Kp / 128, Mp]) or
// per token ([M, Kp], scales [M]), as quantize_activation lays it out, and their view of it.
std::pair<Fp8Activation, cuda::ActQuantOut> act_output(const at::Tensor& like, int64_t M, int64_t K, ActScaling scaling,
                                                       Fp8Format fmt, bool pow2, const at::Tensor& nonfinite) {
  const bool group = scaling == ActScaling::group;
  const int64_t Kp = padded_k(K, group), Mp = group ? round_up(M, kGroupRowAlign) : M;
  const auto opts = like.options();
  at::Tensor scale = group ? at::empty({Kp / kFp8Block, Mp}, opts.dtype(at::kFloat))  // [Kp / 128, Mp]
                           : at::empty({M}, opts.dtype(at::kFloat));                  // [M]
  Fp8Activation out{at::empty({Mp, Kp}, opts.dtype(fp8_scalar_type(fmt))), std::move(scale), M, K, fmt, scaling};
  int* flag = activation_flag(nonfinite, like.device());
  const cuda::ActQuantOut o{static_cast<uint8_t*>(out.data.data_ptr()), out.scale.data_ptr<float>(), M, Mp, K, Kp,
                            fp8_spec(fmt).max, fmt == Fp8Format::e5m2, pow2, flag, !group};
  return {std::move(out), o};
}

}  // namespace
#endif

std::optional<Fp8Activation> rms_norm_quantize_activation(const at::Tensor& x, const at::Tensor& weight, double eps,
                                                          ActScaling scaling, Fp8Format fmt, bool pow2,
                                                          const at::Tensor& nonfinite) {
#ifdef FP8RL_WITH_CUDA
  if (scaling == ActScaling::tensor || !fused_input_ok(x) || !fused_norm_ok(x, weight))
    return std::nullopt;
  auto [out, o] = act_output(x, x.size(0), x.size(1), scaling, fmt, pow2, nonfinite);
  cuda::rms_norm_quantize(x.data_ptr(), x.stride(0), weight.data_ptr(), static_cast<float>(eps), o,
                          at::cuda::getCurrentCUDAStream());
  return std::move(out);
#else
  (void)x, (void)weight, (void)eps, (void)scaling, (void)fmt, (void)pow2, (void)nonfinite;
  return std::nullopt;
#endif
}

std::optional<Fp8Activation> add_rms_norm_quantize_activation(const at::Tensor& x, const at::Tensor& residual,
                                                              const at::Tensor& weight, double eps, ActScaling scaling,
                                                              Fp8Format fmt, bool pow2, at::Tensor& sum,
                                                              const at::Tensor& nonfinite) {
#ifdef FP8RL_WITH_CUDA
  if (scaling == ActScaling::tensor || !fused_input_ok(x) || !fused_input_ok(residual) ||
      residual.sizes() != x.sizes() || residual.device() != x.device() || !fused_norm_ok(x, weight))
    return std::nullopt;
  auto [out, o] = act_output(x, x.size(0), x.size(1), scaling, fmt, pow2, nonfinite);
  at::Tensor s = at::empty(x.sizes(), x.options());  // [M, K]
  cuda::ResidualAdd add;
  add.residual = residual.data_ptr();
  add.residual_stride = residual.stride(0);
  add.sum = s.data_ptr();
  cuda::rms_norm_quantize(x.data_ptr(), x.stride(0), weight.data_ptr(), static_cast<float>(eps), o,
                          at::cuda::getCurrentCUDAStream(), add);
  sum = std::move(s);
  return std::move(out);
#else
  (void)x, (void)residual, (void)weight, (void)eps, (void)scaling, (void)fmt, (void)pow2, (void)sum, (void)nonfinite;
  return std::nullopt;
#endif
}

std::optional<Fp8Activation> silu_mul_quantize_activation(const at::Tensor& gate_up, ActScaling scaling, Fp8Format fmt,
                                                          bool pow2, const at::Tensor& nonfinite) {
#ifdef FP8RL_WITH_CUDA
  // Halves of 8-element multiples.
  if (scaling == ActScaling::tensor || !fused_input_ok(gate_up) || gate_up.size(1) % 16 != 0) return std::nullopt;
  const int64_t inter = gate_up.size(1) / 2;
  auto [out, o] = act_output(gate_up, gate_up.size(0), inter, scaling, fmt, pow2, nonfinite);
  cuda::silu_mul_quantize(gate_up.data_ptr(), gate_up.stride(0), o, at::cuda::getCurrentCUDAStream());
  return std::move(out);
#else
  (void)gate_up, (void)scaling, (void)fmt, (void)pow2, (void)nonfinite;
  return std::nullopt;
#endif
}

Fp8Weight transpose_weight(const Fp8Weight& w) {
  FP8RL_CHECK(w.scaling != WeightScaling::channel,
              "transpose_weight: per-output-channel scales do not transpose exactly; use block or tensor scaling");
  // W^T in the layout of a fresh [K, N] weight: rows round_up(K, 128), columns padded_k(N) --
  // for block scaling N rounds up to 512, which the transposed [Kp, Np] bytes lack when N is not
  // a multiple of 512 (then the padding holds zeros, and their block scales 1). Transposed
  // through a byte view: the copy kernels move bytes, whatever the float8 flavour.
  const bool block = w.scaling == WeightScaling::block;
  const int64_t rows = round_up(w.in_features, kFp8Block), cols = padded_k(w.out_features, block);
  at::Tensor bytes = w.data.view(at::kByte).t().narrow(0, 0, rows);
  if (bytes.size(1) < cols) bytes = at::constant_pad_nd(bytes, {0, cols - bytes.size(1)}, 0);
  at::Tensor data = bytes.contiguous().view(w.data.scalar_type());
  at::Tensor scale = w.scale;
  if (block) {
    scale = w.scale.t().narrow(0, 0, rows / kFp8Block);
    if (scale.size(1) < cols / kFp8Block) scale = at::constant_pad_nd(scale, {0, cols / kFp8Block - scale.size(1)}, 1.0);
    scale = scale.contiguous();
  }
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

}  // namespace fp8rl::quant
