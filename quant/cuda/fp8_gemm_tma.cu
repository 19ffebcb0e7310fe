#include "quant/cuda/fp8_gemm_tma.h"

#include <stdexcept>
#include <string>

#include "core/util/pdl.h"
#include "quant/cuda/fp8_gemm_tma.cuh"

namespace fp8rl::cuda {
namespace {

using namespace tma_gemm;

template <int kTileN, int kStages, int kGroups>
cudaError_t run(const Fp8GemmTmaArgs& a, cudaStream_t stream) {
  CUtensorMap wmap, xmap;
  if (k_major_map(&wmap, a.w, static_cast<uint64_t>(a.Np), static_cast<uint64_t>(a.Kp), kTileN) != CUDA_SUCCESS ||
      k_major_map(&xmap, a.x, static_cast<uint64_t>(a.Mp), static_cast<uint64_t>(a.Kp), kTileM) != CUDA_SUCCESS)
    return cudaErrorInvalidValue;
  const Args args{a.w_scale, a.x_scale, static_cast<__nv_bfloat16*>(a.y), static_cast<int>(a.Mp),
                  static_cast<int>(a.Np), static_cast<int>(a.Kp)};
  return launch<kTileN, kStages, kGroups, false>(wmap, xmap, args, pdl_enabled(), stream);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool fp8_gemm_tma(const Fp8GemmTmaArgs& a, cudaStream_t stream) {
  // The kernel's limits: the x tile's 64 rows, x_scale rows copied in 16-byte units, the shared
  // w_scale row (1024 K blocks), TMA's 16-byte aligned bases.
  if (a.Mp < 1 || a.Mp > kFp8GemmTmaMaxRows || a.Mp % 4 != 0 || a.Np % 128 != 0 || a.Kp % 128 != 0 ||
      a.Kp / 128 > 1024 || a.Np > (int64_t{1} << 30) || !aligned16(a.w) || !aligned16(a.x) || !aligned16(a.x_scale) ||
      !aligned16(a.y))
    return false;
  // CONFIG-RULE
  const int64_t ctas64 = a.Np / 64, ctas32 = a.Np / 32;
  cudaError_t e;
  if (ctas64 >= 2 * a.num_sms)
    e = run<64, 4, 2>(a, stream);
  else if (ctas32 >= a.num_sms)
    e = run<32, 8, 4>(a, stream);
  else
    e = run<16, 8, 4>(a, stream);
  if (e != cudaSuccess) throw std::runtime_error(std::string("fp8_gemm_tma: ") + cudaGetErrorString(e));
  return true;
}

}  // namespace fp8rl::cuda
