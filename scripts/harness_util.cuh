// Shared by the standalone nvcc harnesses under scripts/ (cublaslt-sweep, cutlass-fp8-bench,
// fp8-skinny-tma; one translation unit each): error checks that end the run with file:line and
// the library's message, fills of random finite E4M3 bytes and of scales, fp8_gemm's cuBLASLt
// descriptor and layouts, Qwen3-8B's projection shapes, rotated weight copies, and a median timer.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

inline void fail_if(bool bad, const char* msg, const char* file, int line) {
  if (!bad) return;
  std::printf("%s:%d %s\n", file, line, msg);
  std::exit(1);
}
#define CK(x)                                                                \
  do {                                                                       \
    const cudaError_t e_ = (x);                                              \
    fail_if(e_ != cudaSuccess, cudaGetErrorString(e_), __FILE__, __LINE__); \
  } while (0)
#define LK(x)                                                                                \
  do {                                                                                       \
    const cublasStatus_t s_ = (x);                                                           \
    fail_if(s_ != CUBLAS_STATUS_SUCCESS, cublasLtGetStatusString(s_), __FILE__, __LINE__); \
  } while (0)

// p[0, n): hashed bytes of E4M3 values with |x| <= 1.875 (exponent <= 7): finite, no NaN.
__global__ void fill_fp8(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = static_cast<uint8_t>(h & 0xBF);
  }
}

// The descriptor fp8_gemm gives cuBLASLt for block-scaled FP8 (quant/fp8_gemm.cpp): fp32
// compute, A = W transposed (the only FP8 layout Hopper runs), B = X, 128x128 block scales on A
// and 1x128 vector scales on B. The caller sets the scale pointers (before asking the
// heuristic: cuBLASLt 13 refuses these scale modes without them) and destroys the descriptor.
inline cublasLtMatmulDesc_t block_scaled_fp8_desc() {
  cublasLtMatmulDesc_t desc;
  LK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
  LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof(T)));
  LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &N, sizeof(N)));
  const int32_t am = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof(am)));
  LK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm, sizeof(bm)));
  return desc;
}

// Qwen3-8B's decode projections as the engine runs them (q/k/v and gate/up fused): N x K.
struct GemmShape {
  const char* name;
  int n, k;
};
constexpr GemmShape kQwen3_8bShapes[] = {
    {"qkv (fused)", 6144, 4096}, {"o", 4096, 4096}, {"gate_up (fused)", 24576, 4096}, {"down", 4096, 12288}};

// p[0, n): 2^-6 when `seed` is 0, else 2^-6 .. 2^-5 hashed from it (scales that vary, so a kernel
// applying the wrong block's scale shows in a check).
__global__ void fill_scales(float* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    p[i] = seed == 0 ? 1.0f / 64 : (1.0f + static_cast<float>(h & 1023) / 1024.0f) / 64.0f;
  }
}

// Copies of one N x K E4M3 weight and its 128x128 block scales ([N/128, K/128]), as many as make
// >= 512 MB, so that calls rotating through them read HBM rather than L2.
struct WeightCopies {
  std::vector<uint8_t*> w;
  std::vector<float*> scale;
  WeightCopies(const GemmShape& s, bool varied_scales) {
    const size_t bytes = static_cast<size_t>(s.n) * s.k, scales = static_cast<size_t>(s.n / 128) * (s.k / 128);
    const size_t copies = std::max<size_t>(2, (size_t{512} << 20) / bytes);
    w.resize(copies);
    scale.resize(copies);
    for (size_t c = 0; c < copies; ++c) {
      CK(cudaMalloc(&w[c], bytes));
      CK(cudaMalloc(&scale[c], scales * 4));
      fill_fp8<<<1024, 256>>>(w[c], bytes, 17u + static_cast<uint32_t>(c));
      fill_scales<<<64, 256>>>(scale[c], scales, varied_scales ? 5u + static_cast<uint32_t>(c) : 0u);
    }
  }
  ~WeightCopies() {
    for (size_t c = 0; c < w.size(); ++c) cudaFree(w[c]), cudaFree(scale[c]);
  }
  int count() const { return static_cast<int>(w.size()); }
};

// cuBLASLt's layouts of fp8_gemm's y [M, N] = x [M, K] w [N, K]^T (A = w, transposed by the
// descriptor; B = x; D = y, bf16).
struct LtLayouts {
  cublasLtMatrixLayout_t a, b, d;
  LtLayouts(int64_t n, int64_t k, int64_t m) {
    LK(cublasLtMatrixLayoutCreate(&a, CUDA_R_8F_E4M3, k, n, k));
    LK(cublasLtMatrixLayoutCreate(&b, CUDA_R_8F_E4M3, k, m, k));
    LK(cublasLtMatrixLayoutCreate(&d, CUDA_R_16BF, n, m, n));
  }
  ~LtLayouts() {
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(d);
  }
};

// The median over `reps` batches of a batch's time per call, in us: batch(rep) enqueues
// calls_per_batch calls on the default stream, timed between events e0 and e1.
template <class F>
double median_us(F&& batch, int calls_per_batch, int reps, cudaEvent_t e0, cudaEvent_t e1) {
  std::vector<double> t;
  for (int rep = 0; rep < reps; ++rep) {
    CK(cudaEventRecord(e0));
    batch(rep);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(1e3 * ms / calls_per_batch);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The GPU's name and SM count on stdout, then a cuBLASLt handle and fp8_gemm's 32 MiB workspace.
struct LtSession {
  cublasLtHandle_t lt;
  void* ws;
  size_t ws_bytes = size_t{32} << 20;
  LtSession() {
    cudaDeviceProp prop{};
    CK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    LK(cublasLtCreate(&lt));
    CK(cudaMalloc(&ws, ws_bytes));
  }
};
