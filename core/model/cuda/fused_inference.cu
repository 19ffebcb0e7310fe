// The decoder's fused inference kernels. Reference: the ATen ops of rms_norm, apply_rope and
// silu_mul (core/model/layers.cpp), which the trainer runs with autograd; tests/core/model/
// gpu_test_fused_inference.cpp compares the two on awkward shapes. Why: a decode step is
// launch-bound, and RMSNorm alone was 8 elementwise kernels, 4 times per layer (input, post-
// attention, q and k norms) -- over half of a decoder layer's kernels.
#include "core/model/cuda/fused_inference.h"
#include "core/util/pdl.cuh"
#include "core/model/cuda/convert.cuh"
#include "core/model/cuda/fused_rows.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fp8rl::cuda {
namespace {

// One row per THREADS threads: a warp for head-sized rows (q/k norms, several rows per block), a
// block for hidden-sized ones; VEC = 8 where the rows are 16-byte aligned. The first version, a
// warp of scalar loads per row, walked a 4096-wide row in 128 dependent steps: ~50 us per hidden
// norm, 40% of a Qwen3-8B decode step (docs/BENCHMARKS.md).
template <typename T, int THREADS, int VEC>
__global__ void __launch_bounds__(THREADS < 128 ? 128 : THREADS) rms_norm_kernel(const RowsView v, const T* weight,
                                                                                float eps, T* out) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  constexpr int kRows = THREADS < 128 ? 128 / THREADS : 1;  // rows per block
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.x / THREADS;
  const int t = threadIdx.x % THREADS;
  if (kRows > 1 && row >= v.n * v.heads) return;  // kRows == 1: the grid has one block per row
  using P = Pack<T, VEC>;
  const T* x = static_cast<const T*>(v.x) + (row / v.heads) * v.stride_n + (row % v.heads) * v.stride_h;
  const float r = rsqrtf(row_sum<THREADS>(rms_partial_sum<T, THREADS, VEC>(x, v.dim, t)) / static_cast<float>(v.dim) + eps);
  T* y = out + row * v.dim;
  for (int64_t d = static_cast<int64_t>(t) * VEC; d < v.dim; d += THREADS * VEC) {
    const P p = *reinterpret_cast<const P*>(x + d), w = *reinterpret_cast<const P*>(weight + d);
    P o;
#pragma unroll
    for (int i = 0; i < VEC; ++i) o.v[i] = rms_norm_element(p.v[i], w.v[i], r);
    *reinterpret_cast<P*>(y + d) = o;
  }
}

// rms_norm_kernel<T, 256, 8> of s = x + y, with s stored: a block per hidden-size row.
template <typename T>
__global__ void __launch_bounds__(256) add_rms_norm_kernel(const AddRmsNormArgs a) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  using P = Pack<T, 8>;
  const int64_t row = blockIdx.x;
  const int t = threadIdx.x;
  const T* x = static_cast<const T*>(a.x) + row * a.x_stride;
  const T* y = static_cast<const T*>(a.y) + row * a.y_stride;
  T* s = static_cast<T*>(a.sum) + row * a.dim;
  const float ss = add_rms_partial_sum<T, 256, 8>(x, y, s, a.dim, t);
  const float r = rsqrtf(row_sum<256>(ss) / static_cast<float>(a.dim) + a.eps);
  const T* weight = static_cast<const T*>(a.weight);
  T* out = static_cast<T*>(a.out) + row * a.dim;
  for (int64_t d = static_cast<int64_t>(t) * 8; d < a.dim; d += 256 * 8) {  // this thread's own sums
    const P p = *reinterpret_cast<const P*>(s + d), w = *reinterpret_cast<const P*>(weight + d);
    P o;
#pragma unroll
    for (int i = 0; i < 8; ++i) o.v[i] = rms_norm_element(p.v[i], w.v[i], r);
    *reinterpret_cast<P*>(out + d) = o;
  }
}

template <typename T, int THREADS, int VEC>
void launch_rms_norm(const RowsView& v, const void* weight, float eps, void* out, cudaStream_t stream) {
  constexpr int kRows = THREADS < 128 ? 128 / THREADS : 1;
  const int64_t rows = v.n * v.heads;
  const unsigned grid = static_cast<unsigned>((rows + kRows - 1) / kRows);
  pdl::launch(rms_norm_kernel<T, THREADS, VEC>, grid, THREADS * kRows, 0, stream, v, static_cast<const T*>(weight), eps,
                                                                         static_cast<T*>(out));
}

template <typename T>
void launch_rms_norm(const RowsView& v, const void* weight, float eps, void* out, cudaStream_t stream) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vec = v.dim % 8 == 0 && v.stride_n % 8 == 0 && v.stride_h % 8 == 0 && aligned(v.x) && aligned(weight) &&
                   aligned(out);
  const bool wide = v.dim > 1024;  // a block per row (hidden norms); else a warp (head norms)
  if (vec)
    wide ? launch_rms_norm<T, 256, 8>(v, weight, eps, out, stream) : launch_rms_norm<T, 32, 8>(v, weight, eps, out, stream);
  else
    wide ? launch_rms_norm<T, 256, 1>(v, weight, eps, out, stream) : launch_rms_norm<T, 32, 1>(v, weight, eps, out, stream);
}

template <typename T>
__global__ void rope_kernel(const RowsView v, const T* cos, const T* sin, T* out) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // element of [n, heads, dim]
  if (i >= v.n * v.heads * v.dim) return;
  const int64_t d = i % v.dim, row = i / v.dim, tok = row / v.heads, h = row % v.heads;
  const int64_t half = v.dim / 2;
  const T* x = static_cast<const T*>(v.x) + tok * v.stride_n + h * v.stride_h;
  const float rot = d < half ? -to_float(x[d + half]) : to_float(x[d - half]);
  const float a = round_to<T>(to_float(x[d]) * to_float(cos[tok * v.dim + d]));
  const float b = round_to<T>(rot * to_float(sin[tok * v.dim + d]));
  out[i] = from_float<T>(a + b);
}

// q/k norm + RoPE: LANES threads per (token, head) row, 8 elements (one 16-byte pack) each, q's
// rows then k's, 128 / LANES rows per block. Each thread issues its x, weight, cos and sin loads
// at once, then reduces: the first version (a full warp per row, cos/sin loaded after the
// reduction) moved 0.7 TB/s at 8K tokens, this one ~1.4 TB/s (158 us a layer at 8K tokens,
// Qwen3-8B heads, H100). Tried (twentieth session), 32-bit row indices with 1, 2 or 4 rows per
// thread and all their loads issued together: 158, 157 and 234 us, no gain (docs/BENCHMARKS.md).
// The sum of squares is rms_norm_kernel<T, 32, 8>'s, bit for bit: with dim <= 8 * LANES every
// lane holds at most one pack, and the lanes a 32-wide reduction adds beyond LANES hold exact
// zeros. The normalised row goes through shared memory because RoPE pairs element d with
// d +- dim/2, which another lane made.
// STORE (KvStoreArgs): 0 none; 1 the rotated K rows and, as rows after k's, the V rows copied into
// the cache's slots; 2 the same as E4M3 bytes. A row's source is picked as scalars, never as a
// whole RowsView, which a runtime choice can put on a local-memory stack (rollout/cuda/kv_write.cu).
template <typename T, int LANES, int STORE>
__global__ void __launch_bounds__(128) qk_norm_rope_kernel(const QkNormRopeArgs a) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  constexpr int VEC = 8, kRows = 128 / LANES;
  using P = Pack<T, VEC>;
  __shared__ float normed[kRows][LANES * VEC];
  const int64_t qk_heads = a.q.heads + a.k.heads, dim = a.q.dim, half = dim / 2;
  const int64_t heads = qk_heads + (STORE != 0 ? a.k.heads : 0);
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.x / LANES;
  const int64_t d = static_cast<int64_t>(threadIdx.x % LANES) * VEC;
  float* s = normed[threadIdx.x / LANES];
  // No early return: the shuffles below take the whole warp, which may hold two rows.
  const bool active = row < a.q.n * heads && d < dim;
  const int64_t tok = active ? row / heads : 0, h = active ? row % heads : 0;
  const bool is_q = h < a.q.heads, is_v = STORE != 0 && h >= qk_heads;
  const int64_t vh = is_q ? h : (is_v ? h - qk_heads : h - a.q.heads);  // head within its tensor
  const void* src = is_q ? a.q.x : (is_v ? a.store.v.x : a.k.x);
  const int64_t stride_n = is_q ? a.q.stride_n : (is_v ? a.store.v.stride_n : a.k.stride_n);
  const int64_t stride_h = is_q ? a.q.stride_h : (is_v ? a.store.v.stride_h : a.k.stride_h);
  const T* weight = static_cast<const T*>(is_q ? a.q_weight : (is_v ? nullptr : a.k_weight));
  P x{}, w{}, c{}, sn{};
  if (active) {
    x = *reinterpret_cast<const P*>(static_cast<const T*>(src) + tok * stride_n + vh * stride_h + d);
    if (weight) w = *reinterpret_cast<const P*>(weight + d);
    if (!is_v) {  // V rows are stored as they are
      c = *reinterpret_cast<const P*>(static_cast<const T*>(a.cos) + tok * dim + d);
      sn = *reinterpret_cast<const P*>(static_cast<const T*>(a.sin) + tok * dim + d);
    }
  }
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < VEC; ++i) ss += to_float(x.v[i]) * to_float(x.v[i]);
#pragma unroll
  for (int o = LANES / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  const float r = rsqrtf(ss / static_cast<float>(dim) + a.eps);
  if (active) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) s[d + i] = to_float(weight ? rms_norm_element(x.v[i], w.v[i], r) : x.v[i]);
  }
  __syncwarp();
  if (!active) return;
  P o = x;  // V rows: stored as they are
  if (!is_v) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const int64_t e = d + i;
      const float rot = e < half ? -s[e + half] : s[e - half];
      const float av = round_to<T>(s[e] * to_float(c.v[i]));  // rope_kernel's rounding
      const float b = round_to<T>(rot * to_float(sn.v[i]));
      o.v[i] = from_float<T>(av + b);
    }
    T* y = static_cast<T*>(is_q ? a.q_out : a.k_out) + (tok * (is_q ? a.q.heads : a.k.heads) + vh) * dim;
    *reinterpret_cast<P*>(y + d) = o;
  }
  if constexpr (STORE != 0) {
    if (is_q) return;
    const KvStoreArgs& st = a.store;
    void* cache = st.cache_bases != nullptr ? st.cache_bases[is_v ? 1 : 0] : (is_v ? st.v_cache : st.k_cache);
    const int64_t off = (st.slots[tok] * a.k.heads + vh) * dim + d;  // element of [slots, heads, dim]
    if constexpr (STORE == 1) {
      *reinterpret_cast<P*>(static_cast<T*>(cache) + off) = o;
    } else {
      const float scale = *(is_v ? st.v_scale : st.k_scale);
      uint32_t bytes[2] = {0, 0};
#pragma unroll
      for (int i = 0; i < VEC; ++i)  // element d + i at byte i: the cache's little-endian order
        bytes[i / 4] |= static_cast<uint32_t>(kv_e4m3(to_float(o.v[i]), scale)) << (8 * (i % 4));
      *reinterpret_cast<uint2*>(static_cast<uint8_t*>(cache) + off) = make_uint2(bytes[0], bytes[1]);
    }
  }
}

template <typename T, int STORE>
void launch_qk_norm_rope(const QkNormRopeArgs& a, cudaStream_t stream) {
  const int64_t rows = a.q.n * (a.q.heads + a.k.heads + (STORE != 0 ? a.k.heads : 0));
  if (a.q.dim <= 128) {
    pdl::launch(qk_norm_rope_kernel<T, 16, STORE>, static_cast<unsigned>((rows + 7) / 8), 128, 0, stream, a);
  } else {
    pdl::launch(qk_norm_rope_kernel<T, 32, STORE>, static_cast<unsigned>((rows + 3) / 4), 128, 0, stream, a);
  }
}

template <typename T>
void launch_qk_norm_rope(const QkNormRopeArgs& a, cudaStream_t stream) {
  if (a.store.v.x == nullptr)
    launch_qk_norm_rope<T, 0>(a, stream);
  else if (a.store.k_scale == nullptr)
    launch_qk_norm_rope<T, 1>(a, stream);
  else
    launch_qk_norm_rope<T, 2>(a, stream);
}

// SiLU of the gate times up, VEC elements per thread (16-byte accesses where rows allow). ATen's
// two kernels read gate_up's strided halves element by element (not vectorised: ~4.5 us each at
// batch 64 on Qwen3-8B, 0.3 ms of a decode step) and wrote silu(gate) out and back in between.
template <typename T, int VEC>
__global__ void silu_mul_kernel(const T* x, int64_t n, int64_t inter, int64_t stride_n, T* out) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;  // element of [n, inter]
  if (i >= n * inter) return;
  const int64_t row = i / inter, j = i % inter;
  using P = Pack<T, VEC>;
  const P g = *reinterpret_cast<const P*>(x + row * stride_n + j);
  const P u = *reinterpret_cast<const P*>(x + row * stride_n + inter + j);
  P o;
#pragma unroll
  for (int k = 0; k < VEC; ++k) o.v[k] = silu_mul_element(g.v[k], u.v[k]);
  *reinterpret_cast<P*>(out + i) = o;
}

template <typename T>
void launch_silu_mul(const void* x, int64_t n, int64_t inter, int64_t stride_n, void* out, cudaStream_t stream) {
  const bool vec = inter % 8 == 0 && stride_n % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t threads = (n * inter) / (vec ? 8 : 1);
  const unsigned grid = static_cast<unsigned>((threads + 255) / 256);
  if (vec)
    pdl::launch(silu_mul_kernel<T, 8>, grid, 256, 0, stream, static_cast<const T*>(x), n, inter, stride_n, static_cast<T*>(out));
  else
    pdl::launch(silu_mul_kernel<T, 1>, grid, 256, 0, stream, static_cast<const T*>(x), n, inter, stride_n, static_cast<T*>(out));
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

void rms_norm_rows(const RowsView& v, const void* weight, float eps, void* out, cudaStream_t stream) {
  if (v.n * v.heads == 0) return;
  if (v.bf16)
    launch_rms_norm<__nv_bfloat16>(v, weight, eps, out, stream);
  else
    launch_rms_norm<__half>(v, weight, eps, out, stream);
  check_launch("rms_norm_kernel");
}

bool add_rms_norm_rows(const AddRmsNormArgs& a, cudaStream_t stream) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (a.dim <= 1024 || a.dim % 8 != 0 || a.x_stride % 8 != 0 || a.y_stride % 8 != 0 || !aligned(a.x) || !aligned(a.y) ||
      !aligned(a.weight) || !aligned(a.sum) || !aligned(a.out))
    return false;
  if (a.rows == 0) return true;
  if (a.bf16)
    pdl::launch(add_rms_norm_kernel<__nv_bfloat16>, static_cast<unsigned>(a.rows), 256, 0, stream, a);
  else
    pdl::launch(add_rms_norm_kernel<__half>, static_cast<unsigned>(a.rows), 256, 0, stream, a);
  check_launch("add_rms_norm_kernel");
  return true;
}

void rope_rows(const RowsView& v, const void* cos, const void* sin, void* out, cudaStream_t stream) {
  const int64_t total = v.n * v.heads * v.dim;
  if (total == 0) return;
  const unsigned grid = static_cast<unsigned>((total + 255) / 256);
  if (v.bf16)
    pdl::launch(rope_kernel<__nv_bfloat16>, grid, 256, 0, stream, v, static_cast<const __nv_bfloat16*>(cos),
                                                         static_cast<const __nv_bfloat16*>(sin), static_cast<__nv_bfloat16*>(out));
  else
    pdl::launch(rope_kernel<__half>, grid, 256, 0, stream, v, static_cast<const __half*>(cos), static_cast<const __half*>(sin),
                                                  static_cast<__half*>(out));
  check_launch("rope_kernel");
}

bool qk_norm_rope_rows(const QkNormRopeArgs& a, cudaStream_t stream) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool ok = a.q.dim % 8 == 0 && a.q.dim <= kMaxFusedHeadDim && a.k.dim == a.q.dim && a.k.n == a.q.n &&
                  a.k.bf16 == a.q.bf16 && a.q.stride_n % 8 == 0 && a.q.stride_h % 8 == 0 && a.k.stride_n % 8 == 0 &&
                  a.k.stride_h % 8 == 0 && aligned(a.q.x) && aligned(a.k.x) && aligned(a.cos) && aligned(a.sin) &&
                  aligned(a.q_out) && aligned(a.k_out) && (!a.q_weight || aligned(a.q_weight)) &&
                  (!a.k_weight || aligned(a.k_weight));
  // A store: V rows laid out as k's (16-byte aligned), slots, both caches (16-byte aligned: whole
  // packs of 8 elements land on multiples of 8 elements), both scales or neither.
  const KvStoreArgs& st = a.store;
  const bool store_ok =
      st.v.x == nullptr ||
      (st.v.n == a.k.n && st.v.heads == a.k.heads && st.v.dim == a.k.dim && st.v.bf16 == a.k.bf16 &&
       st.v.stride_n % 8 == 0 && st.v.stride_h % 8 == 0 && aligned(st.v.x) && st.slots != nullptr &&
       (st.cache_bases != nullptr || (st.k_cache && st.v_cache && aligned(st.k_cache) && aligned(st.v_cache))) &&
       (st.k_scale == nullptr) == (st.v_scale == nullptr));
  if (!ok || !store_ok) return false;
  if (a.q.n * (a.q.heads + a.k.heads) == 0) return true;
  if (a.q.bf16)
    launch_qk_norm_rope<__nv_bfloat16>(a, stream);
  else
    launch_qk_norm_rope<__half>(a, stream);
  check_launch("qk_norm_rope_kernel");
  return true;
}

void silu_mul_rows(const void* x, int64_t n, int64_t inter, int64_t stride_n, bool bf16, void* out, cudaStream_t stream) {
  if (n * inter == 0) return;
  if (bf16)
    launch_silu_mul<__nv_bfloat16>(x, n, inter, stride_n, out, stream);
  else
    launch_silu_mul<__half>(x, n, inter, stride_n, out, stream);
  check_launch("silu_mul_kernel");
}

}  // namespace fp8rl::cuda
