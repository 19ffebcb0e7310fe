// FP8 GEMM: y [M, N] = x [M, K] @ w [N, K]^T, FP8 operands, FP32 accumulation, bf16/fp32 out.
//
// Granularities pair up (validated by the recipe): block weights x 1x128 group activations,
// channel weights x per-token activations, tensor x tensor.
//
//   CUDA: cuBLASLt, called directly. Column-major view: D[N, M] = op(A)[N, K] op(B)[K, M]
//         with A = w (TRANSA = T, the only FP8 layout Hopper runs), B = x. Scale modes:
//         A BLK128x128_32F / OUTER_VEC_32F / SCALAR_32F, B VEC128_32F / OUTER_VEC_32F /
//         SCALAR_32F. One descriptor, layouts and heuristic algorithm cached per shape, in an
//         LRU of kFp8GemmPlanCacheCapacity plans (fp8_gemm.cpp says why); thread-safe.
//         Block x group E4M3 at M <= 8 (decode at batch 1-8) runs our own tensor-core GEMV
//         instead (quant/cuda/fp8_gemv.h): cuBLASLt reads the weight at ~30% of HBM bandwidth
//         there. So does channel x token E4M3 at M <= 8 (cuBLASLt made channel-scaled FP8
//         decode slower than BF16 at batch 1: docs/BENCHMARKS.md). M = 9-64 (bf16 out, sm_90)
//         runs CUTLASS's block-scaled kernel with swapped operands (quant/cuda/fp8_gemm_sm90.h;
//         built with FlashInfer's headers; FP8RL_CUTLASS_SMALL_M=0 turns it off), and with
//         FP8RL_CUTLASS_LARGE_M=1 M > 64 (prefill, the trainer's GEMMs) the same kernel with the
//         operands as they come (off by default: no faster than cuBLASLt there).
//   CPU:  dequantize both operands and multiply in float32 (the reference numerics).
//
// at::_scaled_mm is the independent reference in tests (fp8_gemm_scaled_mm below).
#pragma once

#include <ATen/core/Tensor.h>

#include "quant/scaling.h"

namespace fp8rl::quant {

// out_dtype: kBFloat16 or kFloat. Returns a contiguous [M, N] tensor on x's device.
// Throws RuntimeFailure when cuBLASLt has no kernel for the combination.
at::Tensor fp8_gemm(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype = at::kBFloat16);

// Bound of the cuBLASLt plan cache (plans, one per device x scaling x formats x M x Np x Kp x
// out dtype). Sized for a step's working set: ~7 projection shapes x forward and backward x up to
// ~64 distinct M values (decode batches shrink as sequences finish); a plan is ~1 KiB of host
// memory.
inline constexpr int64_t kFp8GemmPlanCacheCapacity = 1024;

// Plans now cached (always 0 in a build without CUDA: the CPU path has no cache). For tests.
int64_t fp8_gemm_plan_cache_size();

// The same product through at::_scaled_mm (CUDA only; tests and benchmarks).
at::Tensor fp8_gemm_scaled_mm(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype = at::kBFloat16);

// The small-M kernels, each callable on its own for tests and benchmarks (fp8_gemm chooses by
// itself): cuBLASLt's block-scaled GEMM, the CUDA-core GEMV (M <= 4), the tensor-core GEMV
// (M <= 8), CUTLASS's sm90 kernel (any M, bf16 out; when built: fp8_gemm_sm90_built()).
// Block x group E4M3 on CUDA only (the tensor-core GEMV and cuBLASLt also channel x token);
// FP8RL_CHECK otherwise.
enum class SmallMKernel { cublaslt, cuda_cores, tensor_cores, cutlass_sm90 };
bool fp8_gemm_sm90_built();
at::Tensor fp8_gemm_small_m(const Fp8Activation& x, const Fp8Weight& w, at::ScalarType out_dtype, SmallMKernel kernel);

// Whether fp8_gemm would use cuBLASLt's fast (reduced-precision) accumulation for this pair:
// on for tensor and channel scaling (as vLLM does for rollouts), unavailable for block scaling.
bool fp8_gemm_fast_accum(WeightScaling scaling);

}  // namespace fp8rl::quant
