// Writing a step's K/V into the cache.
// - In the model's dtype: K and V copied to their slots in one kernel (reference: ATen's
//   index_copy_, one kernel per tensor).
// - Into an FP8 cache, one kernel per tensor: quantize (x / scale, clamp to +-448, E4M3
//   round-to-nearest-even) and scatter to the cache slots. Reference: the ATen ops of
//   KvCache::write (rollout/kv_cache.cpp: float, divide, clamp, cast, index_copy_), matched bit
//   for bit (same IEEE division, same saturating conversion). Why: those are five kernels per
//   tensor, twice per layer, in every decode step.
// - Back out of an FP8 cache for prefill's attention: gather the rows of a step's key slots and
//   dequantize them to the model's dtype in one kernel. Reference: KvCache::gather's ATen ops
//   (index_select, float, multiply by the scale, cast), matched bit for bit (E4M3 -> float is
//   exact, one IEEE multiply, one round-to-nearest-even cast).
// tests/rollout/gpu_test_paged_decode.cpp compares each with its reference.
#include "rollout/cuda/rollout_kernels.h"
#include "core/util/pdl.cuh"
#include "core/model/cuda/convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <stdexcept>
#include <string>
#include <type_traits>

namespace fp8rl::cuda {
namespace {


template <typename T>
__global__ void kv_write_fp8_kernel(const KvWriteArgs a) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // element of [N, Hkv, D]
  const int64_t row = a.heads * a.dim;
  if (i >= a.tokens * row) return;
  const int64_t t = i / row, rest = i % row, h = rest / a.dim, d = rest % a.dim;
  const float x = to_float(static_cast<const T*>(a.x)[t * a.stride_t + h * a.stride_h + d]);
  uint8_t* cache = a.cache_base != nullptr ? *a.cache_base : a.cache;
  cache[a.slots[t] * row + rest] = kv_e4m3(x, *a.scale);
}

__device__ __forceinline__ void store_value(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_value(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store_value(__half* p, float v) { *p = __float2half_rn(v); }

// Eight consecutive elements of one gathered row per thread: one 8-byte load, 16 or 32 bytes out.
template <typename T>
__global__ void kv_gather_fp8_kernel(const KvGatherArgs a) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  const int64_t pieces = a.row / 8;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.tokens * pieces) return;
  const int64_t t = i / pieces, c = i % pieces;
  const uint2 bytes = *reinterpret_cast<const uint2*>(a.cache + a.slots[t] * a.row + c * 8);
  const float s = *a.scale;
  alignas(16) T vals[8];
  const uint32_t words[2] = {bytes.x, bytes.y};
#pragma unroll
  for (int w = 0; w < 2; ++w) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // the low byte of each pair is the earlier element
      const __half2 pair(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[w] >> (16 * h)), __NV_E4M3));
      const float2 f = __half22float2(pair);
      store_value(&vals[4 * w + 2 * h], f.x * s);
      store_value(&vals[4 * w + 2 * h + 1], f.y * s);
    }
  }
  uint4* out = reinterpret_cast<uint4*>(static_cast<T*>(a.out) + t * a.row + c * 8);
#pragma unroll
  for (int j = 0; j < static_cast<int>(sizeof(vals) / 16); ++j) out[j] = reinterpret_cast<const uint4*>(vals)[j];
}

// One CHUNK-byte piece of a K or V row per thread: pieces [0, per_tensor) are K's, the rest V's.
// CHUNK = 16 where every row start and the head size allow 16-byte accesses, else the element.
// The K/V choice selects scalars, never a whole argument struct: a struct picked by a runtime
// condition goes to local memory (ptxas: a 160-byte stack frame for the FP8 kernel written that
// way, which made K and V in one launch slower on H200 than in two; 0 bytes here).
template <int CHUNK>
__global__ void kv_write_copy_kernel(const KvCopyArgs a) {
  pdl::begin();  // before any global memory access: core/util/pdl.cuh
  using U = std::conditional_t<CHUNK == 16, uint4, std::conditional_t<CHUNK == 4, uint32_t, uint16_t>>;
  const int64_t per_head = a.dim * a.elem_bytes / CHUNK;
  const int64_t per_tensor = a.tokens * a.heads * per_head;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= 2 * per_tensor) return;
  const bool is_v = i >= per_tensor;
  if (is_v) i -= per_tensor;
  const int64_t c = i % per_head, h = (i / per_head) % a.heads, t = i / (per_head * a.heads);
  const int64_t src = (t * (is_v ? a.v_stride_t : a.k_stride_t) + h * (is_v ? a.v_stride_h : a.k_stride_h)) * a.elem_bytes;
  const int64_t dst = (a.slots[t] * a.heads + h) * a.dim * a.elem_bytes;
  const char* x = static_cast<const char*>(is_v ? a.v : a.k);
  char* cache = static_cast<char*>(a.cache_bases != nullptr ? a.cache_bases[is_v ? 1 : 0] : (is_v ? a.v_cache : a.k_cache));
  reinterpret_cast<U*>(cache + dst)[c] = reinterpret_cast<const U*>(x + src)[c];
}

}  // namespace

void kv_write_copy(const KvCopyArgs& a, cudaStream_t stream) {
  if (a.tokens * a.heads * a.dim == 0) return;
  if (a.elem_bytes != 2 && a.elem_bytes != 4) throw std::invalid_argument("kv_write_copy: 2- or 4-byte elements");
  auto aligned16 = [&](const void* p, int64_t stride_t, int64_t stride_h) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (stride_t * a.elem_bytes) % 16 == 0 &&
           (stride_h * a.elem_bytes) % 16 == 0;
  };
  // Caches bound through cache_bases are 16-byte aligned (KvDirectory checks each one it takes).
  const bool vec = (a.dim * a.elem_bytes) % 16 == 0 && aligned16(a.k, a.k_stride_t, a.k_stride_h) &&
                   aligned16(a.v, a.v_stride_t, a.v_stride_h) &&
                   (a.cache_bases != nullptr || (reinterpret_cast<uintptr_t>(a.k_cache) % 16 == 0 &&
                                                 reinterpret_cast<uintptr_t>(a.v_cache) % 16 == 0));
  const int chunk = vec ? 16 : a.elem_bytes;
  const int64_t threads = 2 * a.tokens * a.heads * (a.dim * a.elem_bytes / chunk);
  const unsigned grid = static_cast<unsigned>((threads + 255) / 256);
  if (chunk == 16)
    pdl::launch(kv_write_copy_kernel<16>, grid, 256, 0, stream, a);
  else if (chunk == 4)
    pdl::launch(kv_write_copy_kernel<4>, grid, 256, 0, stream, a);
  else
    pdl::launch(kv_write_copy_kernel<2>, grid, 256, 0, stream, a);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("kv_write_copy_kernel: ") + cudaGetErrorString(e));
}

namespace {
// One thread per item, 256 a block, the kernel picked by the model's dtype code (KvWriteArgs /
// KvGatherArgs::dtype: 0 float, 1 bf16, 2 fp16); `what` names the call in errors.
template <typename Args>
void launch_by_dtype(const Args& a, int64_t items, void (*f32)(Args), void (*bf16)(Args), void (*f16)(Args),
                     const char* what, cudaStream_t stream) {
  if (a.dtype < 0 || a.dtype > 2) throw std::invalid_argument(std::string(what) + ": unsupported dtype");
  const unsigned grid = static_cast<unsigned>((items + 255) / 256);
  pdl::launch(a.dtype == 0 ? f32 : (a.dtype == 1 ? bf16 : f16), grid, 256, 0, stream, a);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
}  // namespace

void kv_gather_fp8(const KvGatherArgs& a, cudaStream_t stream) {
  if (a.row % 8 != 0) throw std::invalid_argument("kv_gather_fp8: rows of a multiple of 8 elements");
  const int64_t total = a.tokens * (a.row / 8);
  if (total == 0) return;
  launch_by_dtype(a, total, kv_gather_fp8_kernel<float>, kv_gather_fp8_kernel<__nv_bfloat16>,
                  kv_gather_fp8_kernel<__half>, "kv_gather_fp8_kernel", stream);
}

void kv_write_fp8(const KvWriteArgs& a, cudaStream_t stream) {
  const int64_t total = a.tokens * a.heads * a.dim;
  if (total == 0) return;
  launch_by_dtype(a, total, kv_write_fp8_kernel<float>, kv_write_fp8_kernel<__nv_bfloat16>,
                  kv_write_fp8_kernel<__half>, "kv_write_fp8_kernel", stream);
}

}  // namespace fp8rl::cuda
