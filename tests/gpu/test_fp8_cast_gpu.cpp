// The CUDA per-tensor FP8 kernel against the CPU reference (bit-exact) and against ATen's
// CUDA cast. Awkward sizes cover the vector body, the scalar tail and misaligned starts.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "quant/fp8_cast.h"
#include "tests/catch.h"

using namespace fp8rl;

TEST_CASE("CUDA per-tensor FP8 quantization is bit-exact with the CPU reference", "[gpu][fp8]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(1);
  for (int64_t n : {1, 7, 8, 17, 1025, 5137, 1 << 20}) {
    for (auto dtype : {at::kFloat, at::kBFloat16}) {
      for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
        // Scale so that values span the whole format, including saturation and subnormals.
        at::Tensor x = (at::randn({n + 1}, at::kCUDA) * (f == Fp8Format::e4m3 ? 200.0 : 20000.0)).to(dtype);
        at::Tensor misaligned = x.narrow(0, 1, n);  // starts 2 or 4 bytes past an aligned address
        for (const at::Tensor& in : {x.narrow(0, 0, n), misaligned}) {
          const float scale = 0.37f;
          at::Tensor gpu = quantize_per_tensor(in, scale, f);
          at::Tensor cpu = quantize_per_tensor_reference(in, scale, f);
          INFO("n=" << n << " dtype=" << dtype << " e5m2=" << (f == Fp8Format::e5m2));
          REQUIRE(gpu.is_cuda());
          CHECK(at::equal(gpu.cpu().view(at::kByte), cpu.view(at::kByte)));
          if (f == Fp8Format::e4m3) {
            at::Tensor aten = (in.to(at::kFloat) / scale).clamp(-448, 448).to(at::kFloat8_e4m3fn);
            CHECK(at::equal(gpu.view(at::kByte), aten.view(at::kByte)));
          }
        }
      }
    }
  }
}
