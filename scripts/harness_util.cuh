// Shared by the standalone nvcc harnesses under scripts/ (cublaslt-sweep, cutlass-fp8-bench; one
// translation unit each): error checks that end the run with file:line and the library's
// message, and a fill of random finite E4M3 bytes.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

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
