// The fused producer + quantization kernels (quant/cuda/fused_quant.cu; 1x128 groups and per
// token) against their reference, the unfused pair: rms_norm / silu_mul (core/model/layers.h,
// their own CUDA kernels) then quantize_activation. Bit-exact, on awkward shapes: padded rows (M
// not a multiple of 4), padded columns (K not a multiple of 512, or of 128 per token), strided
// rows, a partial last 2048-column span, pow2 scales and E5M2; where the fused kernels do not
// apply they say so (nullopt). Then the FP8 linear's fused forward against its unfused forward.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/InferenceMode.h>

#include <limits>
#include <optional>
#include <vector>

#include "core/model/layers.h"
#include "quant/fp8_model.h"
#include "quant/scaling.h"
#include "tests/catch.h"

using namespace fp8rl;
using namespace fp8rl::quant;

namespace {

bool bits_equal(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && at::equal(a.cpu().contiguous().view(at::kByte), b.cpu().contiguous().view(at::kByte));
}

void check_same(const std::optional<Fp8Activation>& fused, const Fp8Activation& ref) {
  REQUIRE(fused.has_value());
  CHECK(fused->rows == ref.rows);
  CHECK(fused->in_features == ref.in_features);
  CHECK(fused->scaling == ref.scaling);
  CHECK(bits_equal(fused->data, ref.data));
  CHECK(bits_equal(fused->scale, ref.scale));
}

}  // namespace

TEST_CASE("fused RMSNorm + 1x128 or per-token quantization gives the unfused bytes and scales", "[gpu][quant]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  c10::InferenceMode inference;
  at::manual_seed(3);
  const double eps = 1e-6;
  // 1032, 1152: padded columns (1032: per token too); 5120: a partial span; 8200: per token,
  // several spans a thread and a padded last one.
  for (int64_t K : {1032, 1152, 4096, 5120, 8200})
  for (ActScaling scaling : {ActScaling::group, ActScaling::token}) {
    for (int64_t M : {1, 3, 4, 5, 17, 64, 129}) {
      for (bool strided : {false, true}) {
        INFO("K=" << K << " M=" << M << " strided=" << strided << " " << to_string(scaling));
        // A strided x: the left part of a wider row (as a fused projection's output view is).
        at::Tensor wide = (at::randn({M, K + (strided ? 64 : 0)}, at::kCUDA) * 3).to(at::kBFloat16);
        const at::Tensor x = wide.narrow(1, 0, K);
        const at::Tensor w = (1 + 0.1 * at::randn({K}, at::kCUDA)).to(at::kBFloat16);
        for (auto [fmt, pow2] : std::vector<std::pair<Fp8Format, bool>>{
                 {Fp8Format::e4m3, false}, {Fp8Format::e4m3, true}, {Fp8Format::e5m2, false}}) {
          const Fp8Activation ref = quantize_activation(model::rms_norm(x, w, eps), scaling, fmt, pow2);
          check_same(rms_norm_quantize_activation(x, w, eps, scaling, fmt, pow2), ref);
        }
      }
    }
  }
  // Where rms_norm reduces a row with one warp (K <= 1024), or the rows cannot be read 8
  // elements at a time, or the scale is one per tensor, the fused kernel stands aside.
  const auto group = ActScaling::group;
  const at::Tensor w1024 = at::ones({1024}, at::kCUDA).to(at::kBFloat16);
  CHECK_FALSE(rms_norm_quantize_activation(at::randn({4, 1024}, at::kCUDA).to(at::kBFloat16), w1024, eps, group,
                                           Fp8Format::e4m3, false).has_value());
  const at::Tensor w2048 = at::ones({2048}, at::kCUDA).to(at::kBFloat16);
  CHECK_FALSE(
      rms_norm_quantize_activation(at::randn({4, 2048}, at::kCUDA), w2048, eps, group, Fp8Format::e4m3, false).has_value());
  const at::Tensor odd = at::randn({4, 2049}, at::kCUDA).to(at::kBFloat16).narrow(1, 1, 2048);  // misaligned rows
  CHECK_FALSE(rms_norm_quantize_activation(odd, w2048, eps, group, Fp8Format::e4m3, false).has_value());
  CHECK_FALSE(rms_norm_quantize_activation(at::randn({4, 2048}, at::kCUDA).to(at::kBFloat16), w2048, eps,
                                           ActScaling::tensor, Fp8Format::e4m3, false).has_value());
}

// With the residual add before the norm (a decoder layer's attention residual): the sum is x + r
// as ATen's add rounds it, and the bytes and scales those of the unfused chain.
TEST_CASE("fused residual add + RMSNorm + 1x128 quantization gives the unfused sum, bytes and scales", "[gpu][quant]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  c10::InferenceMode inference;
  at::manual_seed(4);
  const double eps = 1e-6;
  for (int64_t K : {1032, 4096, 5120})
  for (ActScaling scaling : {ActScaling::group, ActScaling::token}) {
    for (int64_t M : {1, 5, 64, 129}) {
      for (bool strided : {false, true}) {
        INFO("K=" << K << " M=" << M << " strided=" << strided << " " << to_string(scaling));
        at::Tensor wide = (at::randn({M, K + (strided ? 64 : 0)}, at::kCUDA) * 3).to(at::kBFloat16);
        const at::Tensor x = wide.narrow(1, 0, K);
        // The residual strided too (the other way round), so both row strides are exercised.
        const at::Tensor r =
            (at::randn({M, K + (strided ? 0 : 128)}, at::kCUDA) * 0.7).to(at::kBFloat16).narrow(1, 0, K);
        const at::Tensor w = (1 + 0.1 * at::randn({K}, at::kCUDA)).to(at::kBFloat16);
        const at::Tensor want_sum = x + r;
        for (auto [fmt, pow2] : std::vector<std::pair<Fp8Format, bool>>{{Fp8Format::e4m3, false}, {Fp8Format::e5m2, false}}) {
          at::Tensor sum;
          const std::optional<Fp8Activation> fused =
              add_rms_norm_quantize_activation(x, r, w, eps, scaling, fmt, pow2, sum);
          check_same(fused, quantize_activation(model::rms_norm(want_sum, w, eps), scaling, fmt, pow2));
          CHECK(bits_equal(sum, want_sum));
        }
      }
    }
  }
  // Where it does not apply, nothing is written and the caller runs the steps.
  at::Tensor sum;
  const at::Tensor w1024 = at::ones({1024}, at::kCUDA).to(at::kBFloat16);
  const at::Tensor x1024 = at::randn({4, 1024}, at::kCUDA).to(at::kBFloat16);
  CHECK_FALSE(
      add_rms_norm_quantize_activation(x1024, x1024, w1024, eps, ActScaling::group, Fp8Format::e4m3, false, sum).has_value());
  CHECK_FALSE(sum.defined());
}

TEST_CASE("fused SiLU-mul + 1x128 or per-token quantization gives the unfused bytes and scales", "[gpu][quant]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  c10::InferenceMode inference;
  at::manual_seed(4);
  // One 8-element pack; padded columns; 6 full spans (per token: 6 spans in one block).
  for (int64_t I : {8, 136, 3080, 12288})
  for (ActScaling scaling : {ActScaling::group, ActScaling::token}) {
    for (int64_t M : {1, 3, 4, 5, 64, 130}) {
      for (bool strided : {false, true}) {
        INFO("I=" << I << " M=" << M << " strided=" << strided << " " << to_string(scaling));
        at::Tensor wide = (at::randn({M, 2 * I + (strided ? 16 : 0)}, at::kCUDA) * 4).to(at::kBFloat16);
        const at::Tensor gate_up = wide.narrow(1, 0, 2 * I);
        for (bool pow2 : {false, true}) {
          const Fp8Activation ref = quantize_activation(model::silu_mul(gate_up), scaling, Fp8Format::e4m3, pow2);
          check_same(silu_mul_quantize_activation(gate_up, scaling, Fp8Format::e4m3, pow2), ref);
        }
      }
    }
  }
  CHECK_FALSE(silu_mul_quantize_activation(at::randn({2, 24}, at::kCUDA).to(at::kBFloat16), ActScaling::group,
                                           Fp8Format::e4m3, false)
                  .has_value());  // halves of 12: not 8-element packs
}

TEST_CASE("fused quantization flags NaN/inf inputs like the unfused kernel", "[gpu][quant]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  c10::InferenceMode inference;
  at::Tensor x = at::randn({5, 2048}, at::kCUDA).to(at::kBFloat16);
  x.index_put_({3, 700}, std::numeric_limits<float>::infinity());
  const at::Tensor w = at::ones({2048}, at::kCUDA).to(at::kBFloat16);
  at::Tensor gu = at::randn({2, 512}, at::kCUDA).to(at::kBFloat16);
  gu.index_put_({1, 3}, std::numeric_limits<float>::quiet_NaN());
  at::Tensor flag = at::zeros({1}, x.options().dtype(at::kInt));
  for (ActScaling scaling : {ActScaling::group, ActScaling::token}) {
    INFO(to_string(scaling));
    flag.zero_();
    REQUIRE(rms_norm_quantize_activation(x, w, 1e-6, scaling, Fp8Format::e4m3, false, flag).has_value());
    CHECK(flag.item<int>() == 1);
    flag.zero_();
    REQUIRE(silu_mul_quantize_activation(gu, scaling, Fp8Format::e4m3, false, flag).has_value());
    CHECK(flag.item<int>() == 1);
  }
}

TEST_CASE("an FP8 linear's fused-input forwards equal its forward after the unfused op", "[gpu][quant]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(5);
  const int64_t K = 4096, N = 1536;
  const at::Tensor wt = (at::randn({N, K}, at::kCUDA) * 0.02).to(at::kBFloat16);
  const at::Tensor norm = (1 + 0.1 * at::randn({K}, at::kCUDA)).to(at::kBFloat16);
  c10::InferenceMode inference;
  // Block x group and channel x token (M 1 and 7 on the tensor-core GEMV, 64 on cuBLASLt).
  for (auto [ws, as] : std::vector<std::pair<WeightScaling, ActScaling>>{{WeightScaling::block, ActScaling::group},
                                                                        {WeightScaling::channel, ActScaling::token}})
  for (int64_t M : {1, 7, 64}) {
    INFO("M=" << M << " " << to_string(ws));
    Fp8ModelLinear linear(
        Fp8Linear(quantize_weight(wt, ws, Fp8Format::e4m3, false), at::Tensor(), as, false, "test.proj"));
    const at::Tensor x = at::randn({M, K}, at::kCUDA).to(at::kBFloat16);
    CHECK(bits_equal(linear.forward_rms_normed(x, norm, 1e-6), linear.forward(model::rms_norm(x, norm, 1e-6))));
    const at::Tensor gate_up = at::randn({M, 2 * K}, at::kCUDA).to(at::kBFloat16);
    CHECK(bits_equal(linear.forward_silu_mul(gate_up), linear.forward(model::silu_mul(gate_up))));
    const at::Tensor r = at::randn({M, K}, at::kCUDA).to(at::kBFloat16);
    at::Tensor sum;
    CHECK(bits_equal(linear.forward_add_rms_normed(x, r, norm, 1e-6, sum), linear.forward(model::rms_norm(x + r, norm, 1e-6))));
    CHECK(bits_equal(sum, x + r));
  }
}
