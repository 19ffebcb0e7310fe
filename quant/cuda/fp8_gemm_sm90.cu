#include "quant/cuda/fp8_gemm_sm90.h"

#include <algorithm>
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/blockwise_scale_layout.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler_params.h"
#include "cutlass/util/packed_stride.hpp"

#include "core/util/pdl.h"

namespace fp8rl::cuda {
namespace {

using namespace cute;

// Two orientations of one kernel (the collective's scale promotion is the same):
//   kSwap (decode sizes, Mp <= 64): D [Np, Mp] column-major (= Y [Mp, Np] row-major) = W [Np, Kp]
//     row-major x X as B [Kp, Mp] column-major, 128 x TileN tiles (the weight rows fill the MMA's
//     128-row side), ping-pong warpgroups (one's MMAs overlap the other's epilogue), persistent
//     CTAs, no K split: the fastest of 19 configurations in scripts/cutlass-fp8-bench on an H200
//     (1.03-1.43x cuBLASLt at M = 4-64; split-K and stream-K were slower everywhere);
//   plain (prefill and training sizes): D = Y [Mp, Np] row-major = X [Mp, Kp] as A x W as B
//     [Kp, Np] column-major, 128 x TileN tiles, cooperative warpgroups, persistent CTAs.
// Weight scales K-major either way (the engine's layout; with one scale per tile along the weight
// rows the collective reads them with cp.async like any stride), activation scales M-major.
template <int TileN, bool kSwap>
struct BlockScaled {
  using TileShape = Shape<_128, Int<TileN>, _128>;
  using ClusterShape = Shape<_1, _1, _1>;
  using ScaleConfig =
      std::conditional_t<kSwap,
                         cutlass::detail::Sm90BlockwiseScaleConfig<128, 1, 128, cute::GMMA::Major::K, cute::GMMA::Major::MN>,
                         cutlass::detail::Sm90BlockwiseScaleConfig<1, 128, 128, cute::GMMA::Major::MN, cute::GMMA::Major::K>>;
  using LayoutSFA = decltype(ScaleConfig::deduce_layoutSFA());
  using LayoutSFB = decltype(ScaleConfig::deduce_layoutSFB());
  using LayoutD = std::conditional_t<kSwap, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;
  using EpilogueSchedule = std::conditional_t<kSwap, cutlass::epilogue::TmaWarpSpecialized,
                                              cutlass::epilogue::TmaWarpSpecializedCooperative>;
  using MainloopSchedule = std::conditional_t<kSwap, cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8BlockScaledAccum,
                                              cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8BlockScaledAccum>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutD, 8, cutlass::bfloat16_t, LayoutD, 8,
      EpilogueSchedule>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::float_e4m3_t,
      cute::tuple<cutlass::layout::RowMajor, LayoutSFA>, 16, cutlass::float_e4m3_t,
      cute::tuple<cutlass::layout::ColumnMajor, LayoutSFB>, 16, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue,
                                                      cutlass::gemm::PersistentScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const Fp8GemmSm90Args& a) {
    const int n = static_cast<int>(a.Np), m = static_cast<int>(a.Mp), k = static_cast<int>(a.Kp);
    const int rows = kSwap ? n : m, cols = kSwap ? m : n;  // of D
    const auto* w = static_cast<const cutlass::float_e4m3_t*>(a.w);
    const auto* x = static_cast<const cutlass::float_e4m3_t*>(a.x);
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {rows, cols, k, 1},
        {kSwap ? w : x, cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, make_shape(rows, k, 1)),
         kSwap ? x : w, cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, make_shape(cols, k, 1)),
         kSwap ? a.w_scale : a.x_scale, ScaleConfig::tile_atom_to_shape_SFA(make_shape(rows, cols, k, 1)),
         kSwap ? a.x_scale : a.w_scale, ScaleConfig::tile_atom_to_shape_SFB(make_shape(rows, cols, k, 1))},
        {{1.0f, 0.0f},
         nullptr,
         cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, make_shape(rows, cols, 1)),
         static_cast<cutlass::bfloat16_t*>(a.y),
         cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, make_shape(rows, cols, 1))}};
    args.hw_info.sm_count = a.num_sms;  // else CUTLASS queries the device on every call
    return args;
  }

  static bool run(const Fp8GemmSm90Args& a, void* ws, size_t ws_bytes, cudaStream_t stream) {
    Gemm gemm;
    const auto args = arguments(a);
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return false;
    if (Gemm::get_workspace_size(args) > ws_bytes) return false;
    if (gemm.initialize(args, ws, stream) != cutlass::Status::kSuccess) return false;
    // With PDL (core/util/pdl.h) the kernel starts beside the one before it: CUTLASS's producer
    // and epilogue warps wait (griddepcontrol) before their first global access, and the last
    // tile lets the next kernel launch.
    if (gemm.run(stream, nullptr, pdl_enabled()) == cutlass::Status::kSuccess) return true;
    // The caller falls back to cuBLASLt: a failed launch's error must not stay pending for the
    // next kernel's check (CUTLASS's PDL launch path does not clear it).
    (void)cudaGetLastError();
    return false;
  }
};

bool shapes_ok(const Fp8GemmSm90Args& a) {
  constexpr int64_t kMax = 1LL << 30;  // CUTLASS's problem shape is int
  return a.Mp >= 1 && a.Mp % 4 == 0 && a.Np % 128 == 0 && a.Kp % 128 == 0 && a.Np > 0 && a.Kp > 0 && a.Mp <= kMax &&
         a.Np <= kMax && a.Kp <= kMax;
}

}  // namespace

bool fp8_gemm_sm90(const Fp8GemmSm90Args& a, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (!shapes_ok(a)) return false;
  // 128x16 tiles to M = 32; at 64 128x32 (the harness: 128x16 lost on the q/k/v shape there).
  // Taking 128x16 at M = 33-64 where its tiles fit one wave (the o and down projections, 1.07x in
  // the harness) made FP8 + FP8 KV decode at batch 64 0.95x as fast in the engine (H100, tenth
  // session): the harness's isolated launches do not predict the engine here.
  if (a.Mp <= 32) return BlockScaled<16, true>::run(a, workspace, workspace_bytes, stream);
  if (a.Mp <= kFp8GemmSm90MaxRows) return BlockScaled<32, true>::run(a, workspace, workspace_bytes, stream);
  return BlockScaled<128, false>::run(a, workspace, workspace_bytes, stream);
}

}  // namespace fp8rl::cuda
