// FP8 scaling granularities and the quantize/dequantize of weights and activations.
//
//   weights [N, K] (out, in):   tensor: 1 scale | channel: 1 per output row | block: 1 per 128x128 tile
//   activations [M, K]:         tensor: 1 scale | token: 1 per row          | group: 1 per 1x128 run along K
//
// Scale rule (all granularities): s = amax / fp8_max, computed in float; amax == 0 gives s = 1
// (an all-zero tile quantizes to zeros). With pow2, s is rounded up to a power of two:
// s = 2^ceil(log2(amax / fp8_max)). Quantized value q = fp8(x * (1 / s)) with 1 / s rounded to
// float once per tile (a multiply per element instead of an IEEE division: the kernels are
// memory-bound only if the per-element work stays small); fp8_format.h: ties to even,
// saturating. x ~= q * s: `scale` below is what HF calls weight_scale_inv.
//
// Padding: weights are stored as [Np, Kp] and activations as [Mp, Kp], zero-filled. Np is N
// rounded up to 128; Kp is K rounded up to 128, or to 512 for block/group scaling (padded_k):
// cuBLASLt reads the block-scale matrices with the K-block count as their leading dimension,
// which must be a multiple of 4 (seen on H100 with CUDA 13.0: K/128 = 2 gave wrong products,
// 1 and 32 right, and _scaled_mm agreed with the wrong ones). Real model dims are multiples of
// 512 already, so this only costs on test shapes.
// Group-scaled activations also round M up to a multiple of 4 (Mp): cuBLASLt's VEC128 scale
// mode rejects other M (seen on H100 with CUDA 13.0: M = 1, 2, 17 refused, 4, 8, 16, 32 taken).
// Padded rows are zeros with scale 1. Other granularities keep Mp = M.
//
// Non-finite input is an error (RuntimeFailure), never cast: NaN/inf in weights means the
// model diverged. On CUDA the kernels raise a device flag and quantize_weight syncs once per
// call (weights are quantized once, at load); per-step requantization (quantize_weight_into)
// and activations report into a flag the caller checks once per step.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

#include "quant/fp8_format.h"

namespace fp8rl::quant {

enum class WeightScaling { tensor, channel, block };
enum class ActScaling { tensor, token, group };

inline constexpr int64_t kFp8Block = 128;  // the block edge of weights and the group length of activations
inline constexpr int64_t kGroupRowAlign = 4;  // Mp = round_up(M, 4) for 1x128 group-scaled activations

WeightScaling parse_weight_scaling(const std::string& name);  // "tensor" | "channel" | "block"
ActScaling parse_act_scaling(const std::string& name);        // "tensor" | "token" | "group"
const char* to_string(WeightScaling s);
const char* to_string(ActScaling s);

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
// Kp for a K-dimension of K: 512-aligned when 128x128 / 1x128 block scales run along K.
inline int64_t padded_k(int64_t K, bool block_scaled) { return round_up(K, block_scaled ? 4 * kFp8Block : kFp8Block); }

// s = amax / fp8_max (1 if amax == 0), optionally rounded up to a power of two. Bit-identical
// to the device function in quant/cuda/scaling.cu.
float scale_from_amax(float amax, float fp8_max, bool pow2);

struct Fp8Weight {
  at::Tensor data;   // [Np, Kp] fp8 (kFloat8_e4m3fn / kFloat8_e5m2), zero padded
  at::Tensor scale;  // float32: tensor [1] | channel [Np] | block [Np/128, Kp/128]
  int64_t out_features = 0;  // N
  int64_t in_features = 0;   // K
  Fp8Format fmt = Fp8Format::e4m3;
  WeightScaling scaling = WeightScaling::block;
  // Whether the scales were rounded up to powers of two. Recorded so that a requantization
  // (Fp8Linear::requantize_) uses the setting the weight was made with, not whatever its caller
  // passes. Weights read from a checkpoint (hf_fp8.h) keep their stored scales: false.
  bool pow2 = false;
  int64_t nbytes() const;    // storage of data + scale
};

struct Fp8Activation {
  at::Tensor data;   // [Mp, Kp] fp8, zero padded
  at::Tensor scale;  // float32: tensor [1] | token [M] | group [Kp/128, Mp] (K-block-major: cuBLASLt's layout)
  int64_t rows = 0;         // M
  int64_t in_features = 0;  // K
  Fp8Format fmt = Fp8Format::e4m3;
  ActScaling scaling = ActScaling::group;
};

// w: [N, K] float32 or bfloat16, CPU or CUDA. Throws RuntimeFailure on NaN/inf (`what` names
// the tensor in the message, e.g. "model.layers.3.mlp.up_proj.weight").
Fp8Weight quantize_weight(const at::Tensor& w, WeightScaling scaling, Fp8Format fmt, bool pow2,
                          const std::string& what = "weight");

// Uninitialised storage for an N x K weight (data [Np, Kp], scale in the granularity's layout),
// to be filled by quantize_weight_into.
Fp8Weight empty_fp8_weight(int64_t N, int64_t K, WeightScaling scaling, Fp8Format fmt, bool pow2, at::Device device);

// In-place requantization for full fine-tuning: w [N, K] (float32 or bfloat16) quantized into
// out's existing storage (out.data and out.scale keep their pointers, so every copy of this
// Fp8Weight sees the new values) with out's own scaling, format and pow2. Bit-exact with
// quantize_weight_reference. No full-size temporary when w is contiguous on out's device (else
// it is copied there first) and no host sync: if w holds NaN/inf, `nonfinite` (int32 [1] on
// out's device) is set to 1 and out's contents are unspecified; the caller checks the flag once
// for all matrices of a step (throw_if_nonfinite). Bumps the autograd version counters of
// out.data and out.scale (the writes go through raw pointers).
void quantize_weight_into(const at::Tensor& w, Fp8Weight& out, const at::Tensor& nonfinite);

// The one host sync for a non-finite flag (int32 [1]): throws RuntimeFailure "<what> holds NaN
// or inf; refusing to quantize it" when it is set. Does not reset it.
void throw_if_nonfinite(const at::Tensor& nonfinite, const std::string& what);

// x: [M, K] float32 or bfloat16. On CPU non-finite input throws RuntimeFailure (`what` names
// the tensor in the message, e.g. "input of layers.3.mlp.up_proj"); on CUDA, if `nonfinite` is
// a defined int32 [1] tensor on x's device, the kernel sets it to 1 when it meets NaN/inf (no
// sync here); otherwise it is not checked.
Fp8Activation quantize_activation(const at::Tensor& x, ActScaling scaling, Fp8Format fmt, bool pow2,
                                  const at::Tensor& nonfinite = {}, const std::string& what = "activation");

// The op that makes an FP8 projection's input, fused with its quantization (1x128 groups, or
// one scale per token): the same bytes and scales as quantize_activation(rms_norm(x, weight,
// eps), scaling, fmt, pow2) (resp. of silu_mul(gate_up)) from one kernel instead of two, with no
// BF16 copy in between (quant/cuda/fused_quant.cu). nullopt where the fused kernel does not
// apply, and the caller runs the two steps: tensor scaling (its scale needs every row), anything
// but 2-D bfloat16 CUDA tensors with rows of 8-element multiples, 16-byte aligned; for the norm,
// rows of 1024 elements or fewer (rms_norm's kernel reduces those with one warp, a different
// order of additions). No autograd: for inference only. `nonfinite` as for quantize_activation.
std::optional<Fp8Activation> rms_norm_quantize_activation(const at::Tensor& x, const at::Tensor& weight, double eps,
                                                          ActScaling scaling, Fp8Format fmt, bool pow2,
                                                          const at::Tensor& nonfinite = {});
std::optional<Fp8Activation> silu_mul_quantize_activation(const at::Tensor& gate_up, ActScaling scaling, Fp8Format fmt,
                                                          bool pow2, const at::Tensor& nonfinite = {});
// The same for rms_norm(x + residual, weight, eps), with the sum (the residual stream's next
// value, as ATen's add rounds it) written to `sum` ([M, K] contiguous) by the same kernel: the
// bytes of quantize_activation(rms_norm(x + residual, ...)). residual as x: 2-D bfloat16, its
// shape. `sum` is set only when the result is.
std::optional<Fp8Activation> add_rms_norm_quantize_activation(const at::Tensor& x, const at::Tensor& residual,
                                                              const at::Tensor& weight, double eps, ActScaling scaling,
                                                              Fp8Format fmt, bool pow2, at::Tensor& sum,
                                                              const at::Tensor& nonfinite = {});

// The CPU references, whatever the input's device (copies to CPU); the CUDA kernels must
// match them bit for bit.
Fp8Weight quantize_weight_reference(const at::Tensor& w, WeightScaling scaling, Fp8Format fmt, bool pow2);
Fp8Activation quantize_activation_reference(const at::Tensor& x, ActScaling scaling, Fp8Format fmt, bool pow2);

// W^T [K, N] as an Fp8Weight, for dX = dY W through a frozen FP8 weight: the FP8 bytes and, for
// block scaling, the 128x128 block scales transposed. Exact (no requantization): a tile of W is
// a tile of W^T. Tensor scaling is exact too; channel scaling has no exact transpose (throws).
Fp8Weight transpose_weight(const Fp8Weight& w);

// Back to float32 at the original (unpadded) shape, on the input's device: [N, K] / [M, K].
at::Tensor dequantize(const Fp8Weight& w);
at::Tensor dequantize(const Fp8Activation& x);

// The per-element scale of `w`/`x` at the padded shape (float32, [Np, Kp] / [Mp, Kp]); used by
// dequantize and by tests.
at::Tensor expand_scale(const Fp8Weight& w);
at::Tensor expand_scale(const Fp8Activation& x);

}  // namespace fp8rl::quant
