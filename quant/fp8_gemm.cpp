#include "quant/fp8_gemm.h"

#include <ATen/ATen.h>

#include "core/util/error.h"
#include "core/util/log.h"

#ifdef FP8RL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cublasLt.h>

#include "core/util/env.h"
#include "quant/cuda/fp8_gemv.h"
#ifdef FP8RL_WITH_FP8_GEMM_SM90
#include "quant/cuda/fp8_gemm_sm90.h"
#endif

#include <limits>
#include <list>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#endif

namespace fp8rl::quant {

bool fp8_gemm_fast_accum(WeightScaling scaling) { return scaling != WeightScaling::block; }

namespace {

void check_pair(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype) {
  const bool paired = (w.scaling == WeightScaling::block && x.scaling == ActScaling::group) ||
                      (w.scaling == WeightScaling::channel && x.scaling == ActScaling::token) ||
                      (w.scaling == WeightScaling::tensor && x.scaling == ActScaling::tensor);
  FP8RL_CHECK(paired, cat("fp8_gemm: ", to_string(w.scaling), " weights do not pair with ", to_string(x.scaling),
                          " activations"));
  FP8RL_CHECK(x.in_features == w.in_features && x.data.size(1) == w.data.size(1),
              cat("fp8_gemm: K mismatch, x ", x.data.sizes(), " (K=", x.in_features, ") vs w ", w.data.sizes(),
                  " (K=", w.in_features, ")"));
  FP8RL_CHECK(out_dtype == at::kBFloat16 || out_dtype == at::kFloat, "fp8_gemm: out_dtype must be bf16 or fp32");
  FP8RL_CHECK(x.data.device() == w.data.device(), "fp8_gemm: x and w on different devices");
}

#ifdef FP8RL_WITH_CUDA

void lt_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw RuntimeFailure(cat("cuBLASLt ", what, " failed: ", cublasLtGetStatusString(st)));
}

cudaDataType_t lt_type(Fp8Format f) { return f == Fp8Format::e4m3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2; }

// Everything about one GEMM problem except the data and scale pointers. Owns its cuBLASLt
// objects (destroyed when the plan leaves the cache); move-only.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  Plan(Plan&& o) noexcept { *this = std::move(o); }
  Plan& operator=(Plan&& o) noexcept {
    std::swap(desc, o.desc);
    std::swap(a, o.a);
    std::swap(b, o.b);
    std::swap(d, o.d);
    std::swap(algo, o.algo);
    return *this;
  }
  ~Plan() {
    // Descriptors are host-side: cuBLASLt reads them while enqueueing, so destroying one after
    // cublasLtMatmul returned is safe even while the GEMM still runs.
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

constexpr size_t kWorkspaceBytes = 32u << 20;  // what cuBLASLt's Hopper FP8 kernels ask for at most

void set_scale_pointers(const Plan& p, const void* a_scale, const void* b_scale) {
  lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)),
           "A_SCALE_POINTER");
  lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)),
           "B_SCALE_POINTER");
}

// The scale pointers must be set before the heuristic query: for vector and block scale modes
// cuBLASLt rejects a descriptor without them (CUBLAS_STATUS_INVALID_VALUE, seen on H100 with
// CUDA 13.0). The chosen algorithm stays valid for later calls with other pointers.
Plan make_plan(cublasLtHandle_t handle, WeightScaling ws, Fp8Format wf, Fp8Format xf, int64_t M, int64_t Np,
               int64_t Kp, at::ScalarType out_dtype, const void* a_scale, const void* b_scale) {
  Plan p;
  lt_check(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
  const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)), "TRANSA");
  lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)), "TRANSB");
  int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F, b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
  if (ws == WeightScaling::block) {
    a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  } else if (ws == WeightScaling::channel) {
    a_mode = b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
  }
  lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode)), "A_SCALE_MODE");
  lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode)), "B_SCALE_MODE");
  const int8_t fast = fp8_gemm_fast_accum(ws) ? 1 : 0;
  lt_check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)), "FAST_ACCUM");
  const cudaDataType_t dt = out_dtype == at::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F;
  set_scale_pointers(p, a_scale, b_scale);
  lt_check(cublasLtMatrixLayoutCreate(&p.a, lt_type(wf), Kp, Np, Kp), "layout A");
  lt_check(cublasLtMatrixLayoutCreate(&p.b, lt_type(xf), Kp, M, Kp), "layout B");
  lt_check(cublasLtMatrixLayoutCreate(&p.d, dt, Np, M, Np), "layout D");

  cublasLtMatmulPreference_t pref;
  lt_check(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
  const size_t wsb = kWorkspaceBytes;
  lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)),
           "PREF_MAX_WORKSPACE_BYTES");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    throw RuntimeFailure(cat("cuBLASLt has no FP8 kernel for ", to_string(ws), " scaling at M=", M, " N=", Np,
                             " K=", Kp, " (", cublasLtGetStatusString(st), ")"));
  p.algo = result.algo;
  return p;
}

using PlanKey = std::tuple<int, int, int, int64_t, int64_t, int64_t, int>;

// The plan cache: an LRU of kFp8GemmPlanCacheCapacity exact-shape plans, behind one mutex.
//
// Why an LRU and not M buckets: M (tokens in the batch) changes from call to call in rollouts
// and in packed training batches, so an unbounded per-shape map grows for the life of the
// process. Bucketing M (rounding it up to a power of two) would bound it too, but the B and D
// layouts must describe the real M (a larger M reads and writes past the operands), so a bucket
// could share only the heuristic's algorithm, run on shapes it was not chosen for. The LRU keeps
// exact plans (the same kernel the uncached path would pick) and bounds memory; the shapes a
// training step reuses (a few projection shapes x the step's M values) stay resident, and a miss
// costs one heuristic query (tens of microseconds of host time).
//
// Why the mutex covers the whole call, not just the lookup: a plan's descriptor is shared and
// each call writes its own scale pointers into it, so set-pointers-then-enqueue must not
// interleave with another thread's; and holding the lock keeps an in-use plan from being
// evicted (destroyed) underneath the caller. cublasLtMatmul only enqueues, so the critical
// section is a few microseconds of host time.
class PlanCache {
 public:
  std::mutex& mutex() { return mu_; }

  // Requires mutex() held. Returns the cached plan for `key`, building it with `make` on a miss
  // (evicting the least recently used plan past capacity).
  template <class Make>
  const Plan& get(const PlanKey& key, Make&& make) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);  // most recently used first
      return it->second->second;
    }
    Plan plan = make();  // may throw: nothing inserted then
    lru_.emplace_front(key, std::move(plan));
    index_[key] = lru_.begin();
    while (static_cast<int64_t>(lru_.size()) > kFp8GemmPlanCacheCapacity) {
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
    return lru_.front().second;
  }

  int64_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(lru_.size());
  }

 private:
  std::mutex mu_;
  std::list<std::pair<PlanKey, Plan>> lru_;
  std::map<PlanKey, std::list<std::pair<PlanKey, Plan>>::iterator> index_;
};

PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache();  // never destroyed: no cuBLASLt calls at static exit
  return *cache;
}

// One cuBLASLt workspace per (device, stream), allocated at the first FP8 GEMM there and kept
// (32 MiB): a fresh allocation per call costs host time that small-M GEMMs cannot hide. Per
// stream, not per device: two threads enqueueing on different streams would otherwise run
// GEMMs that share scratch memory concurrently on the GPU.
void* workspace_for(const at::Tensor& like, cudaStream_t stream) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, at::Tensor> per_stream;
  std::lock_guard<std::mutex> lock(mu);
  at::Tensor& ws = per_stream[{like.get_device(), stream}];
  if (!ws.defined()) ws = at::empty({static_cast<int64_t>(kWorkspaceBytes)}, like.options().dtype(at::kByte));
  return ws.data_ptr();
}

// Block x group E4M3 with contiguous operands and 1 <= M <= max_rows: a GEMV can run it, and with
// `channel` (the tensor-core GEMV) channel x token too.
bool gemv_applies(const Fp8Activation& x, const Fp8Weight& w, int64_t max_rows, bool channel = false) {
  const bool block = w.scaling == WeightScaling::block && x.scaling == ActScaling::group;
  const bool per_channel = channel && w.scaling == WeightScaling::channel && x.scaling == ActScaling::token;
  return (block || per_channel) && w.fmt == Fp8Format::e4m3 && x.fmt == Fp8Format::e4m3 && x.rows >= 1 &&
         x.rows <= max_rows && w.data.is_contiguous() && w.scale.is_contiguous() && x.data.is_contiguous() &&
         x.scale.is_contiguous();
}

at::Tensor gemv_cuda(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype, bool tensor_cores) {
  at::Tensor out = at::empty({x.rows, w.out_features}, x.data.options().dtype(out_dtype));  // [M, N]
  cuda::Fp8GemvArgs a;
  a.w = static_cast<const uint8_t*>(w.data.data_ptr());
  a.w_scale = w.scale.data_ptr<float>();
  a.x = static_cast<const uint8_t*>(x.data.data_ptr());
  a.x_scale = x.scale.data_ptr<float>();
  a.y = out.data_ptr();
  a.y_bf16 = out_dtype == at::kBFloat16;
  a.M = x.rows;
  a.N = w.out_features;
  a.Np = w.data.size(0);
  a.Kp = w.data.size(1);
  a.Mp = x.data.size(0);
  a.channel = w.scaling == WeightScaling::channel;
  try {
    if (tensor_cores)
      cuda::fp8_gemv_block_mma(a, at::cuda::getCurrentCUDAStream());
    else
      cuda::fp8_gemv_block(a, at::cuda::getCurrentCUDAStream());
  } catch (const std::runtime_error& e) {
    throw RuntimeFailure(e.what());
  }
  return out;
}

#ifdef FP8RL_WITH_FP8_GEMM_SM90
// Block x group E4M3 with contiguous operands, bf16 out, on sm_90.
bool sm90_applies(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype) {
  return gemv_applies(x, w, std::numeric_limits<int64_t>::max()) && out_dtype == at::kBFloat16 &&
         at::cuda::getDeviceProperties(x.data.get_device())->major == 9;
}

// CUTLASS's kernel (quant/cuda/fp8_gemm_sm90.h); an undefined tensor when it cannot run the shapes.
at::Tensor gemm_sm90(const Fp8Activation& x, const Fp8Weight& w) {
  const int64_t Mp = x.data.size(0), Np = w.data.size(0);
  at::Tensor out = at::empty({Mp, Np}, x.data.options().dtype(at::kBFloat16));  // [Mp, Np]
  cuda::Fp8GemmSm90Args a;
  a.w = w.data.data_ptr();
  a.w_scale = w.scale.data_ptr<float>();
  a.x = x.data.data_ptr();
  a.x_scale = x.scale.data_ptr<float>();
  a.y = out.data_ptr();
  a.Mp = Mp;
  a.Np = Np;
  a.Kp = w.data.size(1);
  a.num_sms = at::cuda::getDeviceProperties(x.data.get_device())->multiProcessorCount;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (!cuda::fp8_gemm_sm90(a, workspace_for(x.data, stream), kWorkspaceBytes, stream)) return {};
  out = out.narrow(0, 0, x.rows);
  return Np == w.out_features ? out : out.narrow(1, 0, w.out_features).contiguous();
}

// fp8_gemm runs M = 9-64 (padded rows) on CUTLASS instead of cuBLASLt: 1.03-1.5x the GEMMs and
// 1.03-1.09x FP8 decode at batch 16-64 on an H200 (docs/BENCHMARKS.md); FP8RL_CUTLASS_SMALL_M=0
// turns it off. M > 64 only with FP8RL_CUTLASS_LARGE_M=1: there the harness measured it 0.95-1.18x
// cuBLASLt, and FP8 + FP8 KV decode at batch 128-256 ran 0.96x as fast with it (H100). Taking
// CUTLASS only for M = 65-128 at N <= 8192, K <= 4096 (the harness had cuBLASLt's q/k/v at M = 128
// 1.27x slower there) was measured too: 0.996x at batch 128 in the engine (H100, eleventh
// session), so cuBLASLt keeps those. The switch that decides for `padded_rows`, or null when it
// is off.
const char* sm90_switch_on(int64_t padded_rows) {
  static const bool small = env_switch("FP8RL_CUTLASS_SMALL_M", true);
  static const bool large = env_switch("FP8RL_CUTLASS_LARGE_M", false);
  if (padded_rows <= cuda::kFp8GemmSm90MaxRows) return small ? "FP8RL_CUTLASS_SMALL_M" : nullptr;
  return large ? "FP8RL_CUTLASS_LARGE_M" : nullptr;
}
#endif

at::Tensor gemm_cuda(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype, bool small_m = true) {
  if (small_m && gemv_applies(x, w, cuda::kFp8GemvMmaMaxRows, /*channel=*/true))
    return gemv_cuda(x, w, out_dtype, /*tensor_cores=*/true);
#ifdef FP8RL_WITH_FP8_GEMM_SM90
  const char* sm90_switch = small_m ? sm90_switch_on(x.data.size(0)) : nullptr;
  if (sm90_switch != nullptr && sm90_applies(x, w, out_dtype)) {
    at::Tensor y = gemm_sm90(x, w);
    if (y.defined()) return y;
    // Said once, so a benchmark never reports cuBLASLt's numbers as CUTLASS's unawares.
    static std::once_flag said;
    std::call_once(said, [&] {
      log::warn(cat("fp8_gemm: ", sm90_switch, "=1 but CUTLASS could not run M=", x.rows, " N=", w.out_features,
                    " K=", w.in_features, "; such GEMMs use cuBLASLt"));
    });
  }
#endif
  // M is the padded row count (group scaling rounds it up to a multiple of 4).
  const int64_t M = x.data.size(0), Np = w.data.size(0), Kp = w.data.size(1);
  at::Tensor out = at::empty({M, Np}, x.data.options().dtype(out_dtype));  // [M, Np]
  if (M == 0) return out.narrow(1, 0, w.out_features);
  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  void* workspace = workspace_for(x.data, stream);
  const void* a_scale = w.scale.data_ptr();
  const void* b_scale = x.scale.data_ptr();
  const PlanKey key{x.data.get_device(), static_cast<int>(w.scaling),
                    static_cast<int>(w.fmt) * 2 + static_cast<int>(x.fmt), M, Np, Kp, static_cast<int>(out_dtype)};
  const float alpha = 1.0f, beta = 0.0f;
  {
    PlanCache& cache = plan_cache();
    std::lock_guard<std::mutex> lock(cache.mutex());
    const Plan& plan =
        cache.get(key, [&] { return make_plan(handle, w.scaling, w.fmt, x.fmt, M, Np, Kp, out_dtype, a_scale, b_scale); });
    set_scale_pointers(plan, a_scale, b_scale);
    lt_check(cublasLtMatmul(handle, plan.desc, &alpha, w.data.data_ptr(), plan.a, x.data.data_ptr(), plan.b, &beta,
                            out.data_ptr(), plan.d, out.data_ptr(), plan.d, &plan.algo, workspace, kWorkspaceBytes,
                            stream),
             "Matmul");
  }
  out = out.narrow(0, 0, x.rows);  // leading rows of a row-major matrix: still contiguous
  return Np == w.out_features ? out : out.narrow(1, 0, w.out_features).contiguous();
}

#endif  // FP8RL_WITH_CUDA

}  // namespace

at::Tensor fp8_gemm(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype) {
  check_pair(x, w, out_dtype);
  if (x.data.device().is_cpu()) return at::matmul(dequantize(x), dequantize(w).t()).to(out_dtype);
#ifdef FP8RL_WITH_CUDA
  return gemm_cuda(x, w, out_dtype);
#else
  throw RuntimeFailure(cat("fp8_gemm: tensors on ", x.data.device(), " but fp8rl was built without CUDA"));
#endif
}

at::Tensor fp8_gemm_small_m(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype, SmallMKernel kernel) {
  check_pair(x, w, out_dtype);
#ifdef FP8RL_WITH_CUDA
  FP8RL_CHECK(x.data.is_cuda(), "fp8_gemm_small_m needs CUDA tensors");
  switch (kernel) {
    case SmallMKernel::cublaslt:
      return gemm_cuda(x, w, out_dtype, /*small_m=*/false);
    case SmallMKernel::cuda_cores:
      FP8RL_CHECK(gemv_applies(x, w, cuda::kFp8GemvMaxRows), "fp8_gemm_small_m: the CUDA-core GEMV does not apply");
      return gemv_cuda(x, w, out_dtype, false);
    case SmallMKernel::tensor_cores:
      FP8RL_CHECK(gemv_applies(x, w, cuda::kFp8GemvMmaMaxRows, /*channel=*/true),
                  "fp8_gemm_small_m: the tensor-core GEMV does not apply");
      return gemv_cuda(x, w, out_dtype, true);
    case SmallMKernel::cutlass_sm90: {
#ifdef FP8RL_WITH_FP8_GEMM_SM90
      FP8RL_CHECK(sm90_applies(x, w, out_dtype), "fp8_gemm_small_m: CUTLASS's sm90 kernel does not apply");
      at::Tensor y = gemm_sm90(x, w);
      if (!y.defined()) throw RuntimeFailure("fp8_gemm_small_m: CUTLASS cannot run these shapes");
      return y;
#else
      FP8RL_CHECK(false, "fp8_gemm_small_m: built without CUTLASS's sm90 kernel (FlashInfer's headers)");
#endif
    }
  }
  return {};
#else
  (void)kernel;
  throw RuntimeFailure("fp8_gemm_small_m: fp8rl was built without CUDA");
#endif
}

bool fp8_gemm_sm90_built() {
#ifdef FP8RL_WITH_FP8_GEMM_SM90
  return true;
#else
  return false;
#endif
}

int64_t fp8_gemm_plan_cache_size() {
#ifdef FP8RL_WITH_CUDA
  return plan_cache().size();
#else
  return 0;
#endif
}

at::Tensor fp8_gemm_scaled_mm(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype) {
  check_pair(x, w, out_dtype);
  FP8RL_CHECK(x.data.is_cuda(), "fp8_gemm_scaled_mm needs CUDA tensors");
  const int64_t M = x.data.size(0), Np = w.data.size(0);  // padded M
  at::Tensor sa, sb;
  switch (w.scaling) {
    case WeightScaling::block:  // layouts that _scaled_mm accepts: both outer-dim-major (GPU_MACHINE.md)
      sa = x.scale.t();  // [M, Kp/128], stride (1, M)
      sb = w.scale.t();  // [Kp/128, Np/128], stride (1, Kp/128)
      break;
    case WeightScaling::channel:
      sa = x.scale.reshape({M, 1});
      sb = w.scale.reshape({1, Np});
      break;
    case WeightScaling::tensor:
      sa = x.scale.reshape({});
      sb = w.scale.reshape({});
      break;
  }
  at::Tensor y = at::_scaled_mm(x.data, w.data.t(), sa, sb, std::nullopt, std::nullopt, out_dtype,
                                fp8_gemm_fast_accum(w.scaling));
  return y.narrow(0, 0, x.rows).narrow(1, 0, w.out_features).contiguous();
}

}  // namespace fp8rl::quant
