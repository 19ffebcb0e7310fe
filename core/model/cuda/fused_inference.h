// Launchers of the decoder's fused inference kernels (the ATen side and the reference they are
// tested against: rms_norm, apply_rope and silu_mul in core/model/layers.h). Plain pointers, no ATen.
//
// Rows: `n` tokens x `heads` rows of `dim` elements each, row (i, h) at element offset
// i * stride_n + h * stride_h (a head view of a fused projection's output is not contiguous);
// outputs are contiguous [n, heads, dim]. bf16 selects bfloat16, else float16.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace fp8rl::cuda {

struct RowsView {
  const void* x;
  int64_t n, heads, dim, stride_n, stride_h;
  bool bf16;
};

// out = weight * dtype(x * rsqrt(mean(x^2) + eps)), in float32 inside (HF's RMSNorm, one pass
// per row instead of eight elementwise kernels). weight [dim] in x's dtype.
void rms_norm_rows(const RowsView& x, const void* weight, float eps, void* out, cudaStream_t stream);

// The residual add before a hidden-size RMSNorm, in the same kernel: sum = x + y (rounded as
// ATen's add), out = rms_norm_rows(sum) bit for bit. Takes rows of more than 1024 elements (the
// norm's block-per-row form), dim and strides multiples of 8 and 16-byte aligned pointers;
// returns false and launches nothing otherwise. sum and out [rows, dim] contiguous.
struct AddRmsNormArgs {
  const void* x;
  const void* y;
  int64_t rows, dim, x_stride, y_stride;
  const void* weight;  // [dim]
  float eps;
  void* sum;
  void* out;
  bool bf16;
};
bool add_rms_norm_rows(const AddRmsNormArgs& a, cudaStream_t stream);

// out = dtype(x * cos) + dtype(rotate_half(x) * sin), rounded as ATen rounds the three separate
// ops (bit-exact with apply_rope). cos, sin [n, dim] contiguous in x's dtype.
void rope_rows(const RowsView& x, const void* cos, const void* sin, void* out, cudaStream_t stream);

// One decoder layer's q and k made ready for attention in one kernel: RMSNorm per head (Qwen3's
// q_norm / k_norm; skipped where the weight is null) then RoPE, each rounded as rms_norm_rows
// and rope_rows round (bit-exact with the two of them). Four kernels and two round trips of
// q/k through memory become one: 108 launches fewer per Qwen3-8B decode step.
// Takes dim % 8 == 0, dim <= kMaxFusedHeadDim and 16-byte aligned rows (returns false and
// launches nothing otherwise: the caller runs the two kernels). q_out [n, q.heads, dim],
// k_out [n, k.heads, dim] contiguous.
constexpr int64_t kMaxFusedHeadDim = 256;
// Where the same kernel may also store each token's rotated K row and its V row: slot slots[t] of
// a KV cache [slots, heads, dim] contiguous per tensor (the rollout engine's, rollout/kv_cache.h),
// in the rows' dtype, or with k_scale / v_scale as E4M3 bytes of x / scale saturated to +-448
// (kv_e4m3, convert.cuh): the bytes the cache's own write kernels store from the same K and V.
// The K/V write kernel of every decode step (two with an FP8 cache) goes away.
struct KvStoreArgs {
  RowsView v{};                          // the V rows: k's n, heads and dim (v.x null: store nothing)
  const int64_t* slots = nullptr;        // [n] on the device
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  void* const* cache_bases = nullptr;    // or device {K, V} addresses read by the kernel (KvDirectory)
  const float* k_scale = nullptr;        // FP8: [1] on the device each; null: the rows' dtype
  const float* v_scale = nullptr;
};
struct QkNormRopeArgs {
  RowsView q, k;  // same n, dim and dtype
  const void* q_weight;  // [dim] or null (no norm)
  const void* k_weight;
  float eps;
  const void* cos;  // [n, dim] contiguous
  const void* sin;
  void* q_out;
  void* k_out;
  KvStoreArgs store{};  // optional: store.v.x null stores nothing
};
bool qk_norm_rope_rows(const QkNormRopeArgs& a, cudaStream_t stream);

// out[i][j] = dtype(silu(g)) * u with g = x[i * stride_n + j], u = x[i * stride_n + inter + j]
// (a gate_up projection's output, gate first), rounded as ATen rounds at::silu(gate) * up
// (bit-exact). out [n, inter] contiguous.
void silu_mul_rows(const void* x, int64_t n, int64_t inter, int64_t stride_n, bool bf16, void* out, cudaStream_t stream);

}  // namespace fp8rl::cuda
