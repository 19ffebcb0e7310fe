// The head of each row of an FP8 projection's weight, which the kernel making that projection's
// input asks to be pulled into L2 before it waits for its own input.
//
// Why: a decode step's FP8 GEMMs are small (17-100 MB at Qwen3-8B's shape) and each pays a fixed
// ~4 us of ramp and tail during which the memory is nearly idle (the cutlass harness fits time =
// bytes / 2.8 TB/s + 4.4 us at M = 64). The kernel before the GEMM (RMSNorm or SiLU-mul with the
// 1x128 quantization, or the quantization alone) starts early under dependent launch, and the
// weights do not depend on anything it waits for, so it can start the weight reads the GEMM will
// make first. Each row's head rather than the matrix's first bytes: every CTA of the GEMM (and
// every block of the GEMV) streams its own rows from k = 0, so each finds its first tiles in L2.
// (A row's head is a few lines: with 8 MB over Qwen3-8B's q/k/v rows, 1280 of 4096 bytes.)
// A prefetch is a hint: it cannot change a result, only the time.
#pragma once

#include <algorithm>
#include <cstdint>

namespace fp8rl::quant {

constexpr int64_t kL2Line = 128;  // bytes a prefetch asks for

struct L2Prefetch {
  const void* base = nullptr;  // the weight's bytes [rows, row_bytes]
  int64_t rows = 0;
  int64_t row_bytes = 0;   // the row stride
  int64_t head_bytes = 0;  // how much of each row, a multiple of kL2Line; 0: no prefetch
};

// budget_bytes spread evenly over the heads of `rows` rows of row_bytes each, in whole L2 lines
// (rounded down; at most the row rounded down); nothing where that is no line.
// The kernels count lines in 32 bits: a budget of 2^38 bytes or more is refused (nothing).
inline L2Prefetch l2_prefetch_heads(const void* base, int64_t rows, int64_t row_bytes, int64_t budget_bytes) {
  if (base == nullptr || rows <= 0 || row_bytes <= 0 || budget_bytes <= 0 || budget_bytes >= (int64_t{1} << 38)) return {};
  const int64_t head = std::min(row_bytes, budget_bytes / rows) / kL2Line * kL2Line;
  if (head == 0) return {};
  return {base, rows, row_bytes, head};
}

}  // namespace fp8rl::quant
