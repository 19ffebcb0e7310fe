// Programmatic dependent launch (core/util/pdl.h) against a kernel that lets the next one launch
// at once and writes that kernel's input only ~0.2 ms later (pdl_race_kernels.h). A kernel that
// touched its input before griddepcontrol.wait would read the old bytes; each must give what it
// gives on the final input after a full synchronisation, bit for bit. Covered: RMSNorm (a plain
// kernel of the engine), the FP8 tensor-core GEMV, which loads its first weights before the
// wait (here x is written late), and the two behind a quantizing kernel that lets the GEMV launch
// before its own wait (pdl_early_trigger): three grids in flight at once.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "core/model/cuda/fused_inference.h"
#include "core/util/pdl.h"
#include "quant/cuda/fp8_gemv.h"
#include "quant/cuda/scaling_kernels.h"
#include "tests/catch.h"
#include "tests/rollout/pdl_race_kernels.h"

using namespace fp8rl;

namespace {

constexpr long long kSpinCycles = 400000;  // ~0.2 ms at 2 GHz: far longer than a launch

struct RestorePdl {  // the switches as they were, also when a check throws
  bool was = pdl_enabled(), early = pdl_early_trigger();
  ~RestorePdl() {
    set_pdl_enabled(was);
    set_pdl_early_trigger(early);
  }
};

bool hopper() { return at::cuda::getCurrentDeviceProperties()->major >= 9; }

}  // namespace

TEST_CASE("PDL: the engine's kernels wait for the kernel before them", "[rollout][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  if (!hopper()) SKIP_TEST("programmatic dependent launch needs sm_90");
  const RestorePdl restore;
  set_pdl_enabled(true);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::manual_seed(3);
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);

  SECTION("RMSNorm") {
    const int64_t n = 64, dim = 4096;
    const at::Tensor final_x = at::randn({n, dim}, bf16), w = at::randn({dim}, bf16);
    const at::Tensor x = at::zeros({n, dim}, bf16), out = at::empty({n, dim}, bf16), want = at::empty({n, dim}, bf16);
    cuda::rms_norm_rows({final_x.data_ptr(), n, 1, dim, dim, dim, true}, w.data_ptr(), 1e-6f, want.data_ptr(), stream);
    test::late_copy(final_x.data_ptr(), x.data_ptr(), final_x.numel() * 2, kSpinCycles, stream);
    cuda::rms_norm_rows({x.data_ptr(), n, 1, dim, dim, dim, true}, w.data_ptr(), 1e-6f, out.data_ptr(), stream);
    CHECK(at::equal(out, want));
  }

  SECTION("FP8 GEMV: x written late, weights read before the wait") {
    const int64_t M = 4, N = 4096, K = 4096;
    const auto bytes = at::TensorOptions().device(at::kCUDA).dtype(at::kByte);
    const auto f32 = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
    const at::Tensor w = at::randn({N, K}, f32).to(at::kFloat8_e4m3fn).view(at::kByte);  // [N, K] E4M3
    const at::Tensor final_x = at::randn({M, K}, f32).to(at::kFloat8_e4m3fn).view(at::kByte);
    const at::Tensor w_scale = at::rand({N / 128, K / 128}, f32) + 0.5, x_scale = at::rand({K / 128, M}, f32) + 0.5;
    const at::Tensor x = at::zeros({M, K}, bytes), y = at::empty({M, N}, bf16), want = at::empty({M, N}, bf16);
    cuda::Fp8GemvArgs a;
    a.w = static_cast<const uint8_t*>(w.data_ptr());
    a.w_scale = w_scale.data_ptr<float>();
    a.x_scale = x_scale.data_ptr<float>();
    a.y_bf16 = true;
    a.M = a.Mp = M;
    a.N = a.Np = N;
    a.Kp = K;
    a.x = static_cast<const uint8_t*>(final_x.data_ptr());
    a.y = want.data_ptr();
    cuda::fp8_gemv_block_mma(a, stream);
    test::late_copy(final_x.data_ptr(), x.data_ptr(), final_x.numel(), kSpinCycles, stream);
    a.x = static_cast<const uint8_t*>(x.data_ptr());
    a.y = y.data_ptr();
    cuda::fp8_gemv_block_mma(a, stream);
    CHECK(at::equal(y, want));
  }
  SECTION("RMSNorm + quantization triggering first, then the FP8 GEMV: x written late") {
    set_pdl_early_trigger(true);
    const int64_t M = 3, Mp = 16, N = 2048, K = 4096;  // 3 rows: within the early trigger's limit (scaling_kernels.h)
    const auto bytes = at::TensorOptions().device(at::kCUDA).dtype(at::kByte);
    const auto f32 = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
    const at::Tensor final_x = at::randn({M, K}, bf16), norm_w = at::randn({K}, bf16);
    const at::Tensor x = at::zeros({M, K}, bf16), qx = at::empty({Mp, K}, bytes), qs = at::empty({K / 128, Mp}, f32);
    const at::Tensor w = at::randn({N, K}, f32).to(at::kFloat8_e4m3fn).view(at::kByte);  // [N, K] E4M3
    const at::Tensor w_scale = at::rand({N / 128, K / 128}, f32) + 0.5;
    const at::Tensor y = at::empty({M, N}, bf16), want = at::empty({M, N}, bf16);
    cuda::ActQuantOut o{static_cast<uint8_t*>(qx.data_ptr()), qs.data_ptr<float>(), M, Mp, K, K, 448.0f, false, false,
                        nullptr};
    cuda::Fp8GemvArgs a;
    a.w = static_cast<const uint8_t*>(w.data_ptr());
    a.w_scale = w_scale.data_ptr<float>();
    a.x = static_cast<const uint8_t*>(qx.data_ptr());
    a.x_scale = qs.data_ptr<float>();
    a.y_bf16 = true;
    a.M = M;
    a.Mp = Mp;
    a.N = a.Np = N;
    a.Kp = K;
    a.y = want.data_ptr();
    cuda::rms_norm_quantize(final_x.data_ptr(), K, norm_w.data_ptr(), 1e-6f, o, stream);
    cuda::fp8_gemv_block_mma(a, stream);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    qx.zero_();
    test::late_copy(final_x.data_ptr(), x.data_ptr(), final_x.numel() * 2, kSpinCycles, stream);
    cuda::rms_norm_quantize(x.data_ptr(), K, norm_w.data_ptr(), 1e-6f, o, stream);
    a.y = y.data_ptr();
    cuda::fp8_gemv_block_mma(a, stream);
    CHECK(at::equal(y, want));
  }
}
