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
