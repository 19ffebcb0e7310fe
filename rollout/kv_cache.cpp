#include "rollout/kv_cache.h"

#include <algorithm>

#include "core/util/env.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "rollout/transfer.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>

#include "rollout/cuda/rollout_kernels.h"
#endif

namespace fp8rl::rollout {

namespace {

constexpr double kE4m3Max = 448.0;
constexpr double kScaleHeadroom = 2.0;  // kv_cache.h: one binade above the first write's amax

// FP8RL_FUSED_KV_GATHER=0: an FP8 cache's gathers take the ATen ops on CUDA too (to measure the
// kernel against them in one binary).
EnvToggle g_fused_gather("FP8RL_FUSED_KV_GATHER", true);

// x [N, Hkv, D] -> E4M3 bytes of x / scale, saturated (a plain cast makes NaN past 448).
at::Tensor quantize_kv(const at::Tensor& x, const at::Tensor& scale) {
  return (x.to(at::kFloat) / scale).clamp(-kE4m3Max, kE4m3Max).to(at::kFloat8_e4m3fn).view(at::kByte);
}

// The same write in one kernel on CUDA (rollout/cuda/kv_write.cu); false where it does not apply.
bool write_fp8_fused(at::Tensor& cache, const at::Tensor& slots, const at::Tensor& x, const at::Tensor& scale,
                     void* const* base) {
#ifdef FP8RL_WITH_CUDA
  const at::ScalarType t = x.scalar_type();
  if (!x.is_cuda() || x.dim() != 3 || x.stride(2) != 1 || !(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) ||
      slots.scalar_type() != at::kLong || !slots.is_contiguous() || !cache.is_contiguous())
    return false;
  cuda::KvWriteArgs a;
  a.x = x.data_ptr();
  a.dtype = t == at::kFloat ? 0 : (t == at::kBFloat16 ? 1 : 2);
  a.tokens = x.size(0);
  a.heads = x.size(1);
  a.dim = x.size(2);
  a.stride_t = x.stride(0);
  a.stride_h = x.stride(1);
  a.slots = slots.data_ptr<int64_t>();
  a.scale = scale.data_ptr<float>();
  a.cache = cache.data_ptr<uint8_t>();
  a.cache_base = reinterpret_cast<uint8_t* const*>(base);
  cuda::kv_write_fp8(a, at::cuda::getCurrentCUDAStream(x.device().index()).stream());
  return true;
#else
  (void)base;
  return false;
#endif
}

// An FP8 cache's rows at `slots`, dequantized to `dtype`, in one kernel on CUDA
// (rollout/cuda/kv_write.cu); undefined where it does not apply (dequantize_kv's ATen ops then,
// which it equals bit for bit).
at::Tensor gather_fp8_fused(const at::Tensor& cache, const at::Tensor& slots, const at::Tensor& scale,
                            at::ScalarType dtype) {
#ifdef FP8RL_WITH_CUDA
  const int64_t row = cache.dim() == 3 ? cache.size(1) * cache.size(2) : 0;
  if (!cache.is_cuda() || !cache.is_contiguous() || row == 0 || row % 8 != 0 || slots.device() != cache.device() ||
      slots.scalar_type() != at::kLong || slots.dim() != 1 || !slots.is_contiguous() || scale.device() != cache.device() ||
      scale.scalar_type() != at::kFloat || !(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf))
    return {};
  at::Tensor out = at::empty({slots.size(0), cache.size(1), cache.size(2)}, cache.options().dtype(dtype));
  cuda::KvGatherArgs a;
  a.cache = cache.data_ptr<uint8_t>();
  a.slots = slots.data_ptr<int64_t>();
  a.scale = scale.data_ptr<float>();
  a.out = out.data_ptr();
  a.dtype = dtype == at::kFloat ? 0 : (dtype == at::kBFloat16 ? 1 : 2);
  a.tokens = slots.size(0);
  a.row = row;
  cuda::kv_gather_fp8(a, at::cuda::getCurrentCUDAStream(cache.device().index()).stream());
  return out;
#else
  (void)cache;
  (void)slots;
  (void)scale;
  (void)dtype;
  return {};
#endif
}

// k_cache[slots] = k, v_cache[slots] = v in one kernel on CUDA (rollout/cuda/kv_write.cu) where
// K/V already have the cache's dtype; false where it does not apply (index_copy_ then).
bool write_copy_fused(at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& slots, const at::Tensor& k,
                      const at::Tensor& v, void* const* bases) {
#ifdef FP8RL_WITH_CUDA
  // Everything on one device (the kernel dereferences slots there; index_copy_ would raise).
  // Slots are the scheduler's, in range by construction; index_copy_ also checks their bounds.
  auto ok = [&](const at::Tensor& x, const at::Tensor& cache) {
    return x.is_cuda() && x.device() == cache.device() && x.dim() == 3 && x.stride(2) == 1 &&
           x.scalar_type() == cache.scalar_type() && cache.is_contiguous() && x.size(1) == cache.size(1) &&
           x.size(2) == cache.size(2);
  };
  const int64_t elem = k.element_size();
  if (!ok(k, k_cache) || !ok(v, v_cache) || k.sizes() != v.sizes() || (elem != 2 && elem != 4) ||
      slots.device() != k.device() || slots.scalar_type() != at::kLong || !slots.is_contiguous() ||
      slots.size(0) != k.size(0))
    return false;
  cuda::KvCopyArgs a;
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.tokens = k.size(0);
  a.heads = k.size(1);
  a.dim = k.size(2);
  a.k_stride_t = k.stride(0);
  a.k_stride_h = k.stride(1);
  a.v_stride_t = v.stride(0);
  a.v_stride_h = v.stride(1);
  a.elem_bytes = static_cast<int>(elem);
  a.slots = slots.data_ptr<int64_t>();
  a.k_cache = k_cache.data_ptr();
  a.v_cache = v_cache.data_ptr();
  a.cache_bases = bases;
  cuda::kv_write_copy(a, at::cuda::getCurrentCUDAStream(k.device().index()).stream());
  return true;
#else
  (void)k_cache;
  (void)v_cache;
  (void)slots;
  (void)k;
  (void)v;
  (void)bases;
  return false;
#endif
}

// Whether the current CUDA stream is being captured into a graph (false without CUDA).
bool capturing() {
#ifdef FP8RL_WITH_CUDA
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
#else
  return false;
#endif
}

at::Tensor dequantize_kv(const at::Tensor& bytes, const at::Tensor& scale, at::ScalarType dtype) {
  return (bytes.view(at::kFloat8_e4m3fn).to(at::kFloat) * scale).to(dtype);
}

}  // namespace

int64_t KvCacheShape::bytes_per_block() const {
  const int64_t element = fp8 ? 1 : static_cast<int64_t>(c10::elementSize(dtype));
  return 2 * num_layers * block_size * num_kv_heads * head_dim * element;
}

KvDirectory::KvDirectory(int64_t num_layers, at::Device device) {
  FP8RL_CHECK(num_layers > 0, "KvDirectory: no layers");
  bases_ = at::zeros({num_layers, 2}, at::TensorOptions().dtype(at::kLong).device(device));
  scales_ = at::ones({num_layers, 2}, at::TensorOptions().dtype(at::kFloat).device(device));
}

void* const* KvDirectory::bases(int64_t layer) const {
  FP8RL_CHECK(layer >= 0 && layer < num_layers(), "KvDirectory: layer out of range");
  return reinterpret_cast<void* const*>(bases_.data_ptr<int64_t>() + 2 * layer);
}

KvCache::KvCache(const KvCacheShape& shape, int64_t num_blocks, KvDirectory* directory)
    : shape_(shape), num_blocks_(num_blocks), directory_(directory) {
  FP8RL_CHECK(num_blocks > 0 && shape.num_layers > 0 && shape.block_size > 0, "KvCache: empty shape");
  FP8RL_CHECK(!directory || (directory->num_layers() == shape.num_layers && directory->device() == shape.device),
              "KvCache: its directory was made for other layers or another device");
  const auto opts = at::TensorOptions().dtype(shape.fp8 ? at::kByte : shape.dtype).device(shape.device);
  if (shape.fp8) {
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(shape.device);
    scales_ = directory ? directory->scales_.fill_(1.0) : at::ones({shape.num_layers, 2}, f32);
    calibrated_.assign(static_cast<size_t>(shape.num_layers), false);
  }
  std::vector<int64_t> addresses;  // per layer: K, V
  for (int64_t l = 0; l < shape.num_layers; ++l) {
    k_.push_back(at::zeros({num_blocks * shape.block_size, shape.num_kv_heads, shape.head_dim}, opts));
    v_.push_back(at::zeros({num_blocks * shape.block_size, shape.num_kv_heads, shape.head_dim}, opts));
    for (const at::Tensor* t : {&k_.back(), &v_.back()}) {
      const auto address = reinterpret_cast<uintptr_t>(t->data_ptr());
      FP8RL_CHECK(address % 16 == 0, "KvCache: a cache tensor not 16-byte aligned");  // the copy kernel's vectors
      addresses.push_back(static_cast<int64_t>(address));
    }
  }
  // Stream-ordered: kernels launched after this read the new addresses.
  if (directory) directory->bases_.copy_(upload(std::span<const int64_t>(addresses), at::kLong, shape.device).view({-1, 2}));
}

int64_t KvCache::blocks_that_fit(const KvCacheShape& shape, double utilization, int64_t max_blocks,
                                 int64_t held_bytes) {
  int64_t blocks = max_blocks;
  if (shape.device.is_cuda()) {
#ifdef FP8RL_WITH_CUDA
    const int64_t total = static_cast<int64_t>(at::cuda::getDeviceProperties(shape.device.index())->totalGlobalMem);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(shape.device.index());
    const int64_t allocated = stats.allocated_bytes[0].current + held_bytes;  // aggregate pool
    const int64_t budget = static_cast<int64_t>(utilization * static_cast<double>(total)) - allocated;
    const int64_t fit = std::max<int64_t>(0, budget / shape.bytes_per_block());
    blocks = max_blocks > 0 ? std::min(fit, max_blocks) : fit;
    if (blocks < 1)
      throw RuntimeFailure(cat("rollout.gpu_memory_utilization ", utilization, " leaves no room for the KV cache: ",
                               allocated >> 20, " MiB already allocated of ", total >> 20,
                               " MiB (raise it, or lower the model/trainer memory)"));
#else
    (void)held_bytes;
    throw RuntimeFailure("KvCache: a CUDA device in a build without CUDA");
#endif
  }
  FP8RL_CHECK(blocks > 0, "KvCache::blocks_that_fit: no block count on the CPU");
  return blocks;
}

void KvCache::write(int64_t layer, const at::Tensor& slots, const at::Tensor& k, const at::Tensor& v) {
  const size_t l = static_cast<size_t>(layer);
  // Under CUDA-graph capture with a directory, only the kernels that read the directory may run:
  // anything else would bake this rollout's cache (or a calibration) into a graph kept after it.
  const bool kept = directory_ != nullptr && shape_.device.is_cuda() && capturing();
  FP8RL_CHECK(!kept || !shape_.fp8 || calibrated_[l],
              "KvCache: an FP8 cache's scales are set by an eager write, never inside a CUDA graph");
  const char* refuse = "KvCache: a write under CUDA-graph capture must take the fused kernel (it reads the directory)";
  if (!shape_.fp8) {
    if (write_copy_fused(k_[l], v_[l], slots, k, v, bases(layer))) return;
    FP8RL_CHECK(!kept, refuse);
    k_[l].index_copy_(0, slots, k.to(shape_.dtype));
    v_[l].index_copy_(0, slots, v.to(shape_.dtype));
    return;
  }
  if (!calibrated_[l] && k.numel() > 0) {
    // Device-side: scale = headroom * amax / 448; an all-zero first write gets scale 1, as
    // quant/'s zero blocks do (a tiny scale would saturate every later value of the rollout).
    // The amax is over finite values: one sequence's NaN or inf would otherwise make the scale
    // NaN (every later key NaN) or inf (every later key 0) for the whole rollout's sequences.
    auto scale_of = [](const at::Tensor& x) {
      const at::Tensor a = x.abs();
      const at::Tensor amax = at::where(at::isfinite(a), a, at::zeros_like(a)).amax().to(at::kFloat);
      return at::where(amax > 0, (amax * (kScaleHeadroom / kE4m3Max)).clamp_min(1e-30), at::ones_like(amax));
    };
    scales_[layer][0].copy_(scale_of(k));
    scales_[layer][1].copy_(scale_of(v));
    calibrated_[l] = true;
  }
  void* const* b = bases(layer);
  if (!write_fp8_fused(k_[l], slots, k, k_scale(layer), b)) {
    FP8RL_CHECK(!kept, refuse);
    k_[l].index_copy_(0, slots, quantize_kv(k, k_scale(layer)));
  }
  if (!write_fp8_fused(v_[l], slots, v, v_scale(layer), b ? b + 1 : nullptr)) {
    FP8RL_CHECK(!kept, refuse);
    v_[l].index_copy_(0, slots, quantize_kv(v, v_scale(layer)));
  }
}

std::pair<at::Tensor, at::Tensor> KvCache::gather(int64_t layer, const at::Tensor& slots) const {
  const size_t l = static_cast<size_t>(layer);
  if (shape_.fp8 && g_fused_gather.get()) {
    at::Tensor k = gather_fp8_fused(k_[l], slots, k_scale(layer), shape_.dtype);
    at::Tensor v = gather_fp8_fused(v_[l], slots, v_scale(layer), shape_.dtype);
    if (k.defined() && v.defined()) return {k, v};
  }
  at::Tensor k = k_[l].index_select(0, slots), v = v_[l].index_select(0, slots);
  if (!shape_.fp8) return {k, v};
  return {dequantize_kv(k, k_scale(layer), shape_.dtype), dequantize_kv(v, v_scale(layer), shape_.dtype)};
}

at::Tensor KvCache::k_scale(int64_t layer) const { return shape_.fp8 ? scales_[layer].narrow(0, 0, 1) : at::Tensor(); }
at::Tensor KvCache::v_scale(int64_t layer) const { return shape_.fp8 ? scales_[layer].narrow(0, 1, 1) : at::Tensor(); }

void KvCache::release() {
  k_.clear();
  v_.clear();
  scales_ = at::Tensor();
  calibrated_.clear();
  num_blocks_ = 0;
}

int64_t KvCache::nbytes() const { return num_blocks_ * shape_.bytes_per_block(); }

}  // namespace fp8rl::rollout
