// FP8 scaling on CPU against an independent reference built from ATen ops (tile reshape +
// amax, c10's float8 cast), bit for bit, on awkward shapes; plus edge cases.
#include <ATen/ATen.h>

#include <cmath>

#include "core/util/error.h"
#include "quant/scaling.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::quant;

namespace {

at::ScalarType dtype_of(Fp8Format f) { return f == Fp8Format::e4m3 ? at::kFloat8_e4m3fn : at::kFloat8_e5m2; }

// x [R, C] zero-padded to [Rp, Cp], float32.
at::Tensor pad(const at::Tensor& x, int64_t Rp, int64_t Cp) {
  at::Tensor out = at::zeros({Rp, Cp}, at::kFloat);
  out.narrow(0, 0, x.size(0)).narrow(1, 0, x.size(1)).copy_(x.to(at::kFloat));
  return out;
}

// One scale per tr x tc tile of xp [Rp, Cp]: [Rp/tr, Cp/tc].
at::Tensor ref_scales(const at::Tensor& xp, int64_t tr, int64_t tc, Fp8Format f, bool pow2) {
  const int64_t Rp = xp.size(0), Cp = xp.size(1);
  at::Tensor amax = xp.abs().reshape({Rp / tr, tr, Cp / tc, tc}).amax({1, 3});
  at::Tensor s = amax / fp8_spec(f).max;
  if (pow2) s = s.to(at::kDouble).log2().ceil().exp2().to(at::kFloat);  // double: exact near powers of two
  return at::where(amax > 0, s, at::ones_like(s));
}

at::Tensor ref_data(const at::Tensor& xp, const at::Tensor& s, int64_t tr, int64_t tc, Fp8Format f) {
  // q = fp8(x * (1/s)): the reciprocal rounded to float once, then one multiply (scaling.h).
  at::Tensor inv = (1.0f / s).repeat_interleave(tr, 0).repeat_interleave(tc, 1);
  const double m = fp8_spec(f).max;
  return (xp * inv).clamp(-m, m).to(dtype_of(f));
}

bool bits_equal(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && at::equal(a.contiguous().view(at::kByte), b.contiguous().view(at::kByte));
}

at::Tensor sample(int64_t r, int64_t c, at::ScalarType dt) {
  // Heavy-tailed values with a few exact zeros: exercises saturation, subnormals and ties.
  at::Tensor x = at::randn({r, c}) * at::exp(at::randn({r, c}) * 2);
  if (x.numel() > 3) x.view({-1})[1] = 0;
  return x.to(dt);
}

}  // namespace

TEST_CASE("weights: every granularity matches the ATen reference bit for bit", "[quant][scaling]") {
  at::manual_seed(7);
  for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {17, 33}, {128, 128}, {130, 257}, {256, 384}}) {
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      at::Tensor w = sample(N, K, dt);
      const int64_t Np = round_up(N, 128);
      for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
        for (bool pow2 : {false, true}) {
          for (WeightScaling sc : {WeightScaling::tensor, WeightScaling::channel, WeightScaling::block}) {
            const int64_t Kp = padded_k(K, sc == WeightScaling::block);  // 512-aligned for block scales
            at::Tensor wp = pad(w, Np, Kp);
            INFO("N=" << N << " K=" << K << " dtype=" << dt << " fmt=" << int(f) << " pow2=" << pow2
                      << " scaling=" << to_string(sc));
            Fp8Weight q = quantize_weight(w, sc, f, pow2);
            const int64_t tr = sc == WeightScaling::tensor ? Np : sc == WeightScaling::channel ? 1 : 128;
            const int64_t tc = sc == WeightScaling::block ? 128 : Kp;
            at::Tensor s = ref_scales(wp, tr, tc, f, pow2);
            CHECK(q.out_features == N);
            CHECK(q.in_features == K);
            CHECK(at::equal(q.scale.reshape(s.sizes()), s));
            CHECK(bits_equal(q.data, ref_data(wp, s, tr, tc, f)));
            if (sc == WeightScaling::block) CHECK(q.scale.sizes() == at::IntArrayRef({Np / 128, Kp / 128}));
            if (sc == WeightScaling::channel) CHECK(q.scale.sizes() == at::IntArrayRef({Np}));
          }
        }
      }
    }
  }
}

TEST_CASE("activations: every granularity matches the ATen reference, and group scales are K-block-major",
          "[quant][scaling]") {
  at::manual_seed(8);
  for (auto [M, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 128}, {17, 300}, {33, 257}, {64, 1024}}) {
    at::Tensor x = sample(M, K, at::kBFloat16);
    const int64_t Kp = round_up(K, 128), Kg = padded_k(K, true);  // group scaling pads K to 512
    at::Tensor xp = pad(x, M, Kp);
    for (bool pow2 : {false, true}) {
      INFO("M=" << M << " K=" << K << " pow2=" << pow2);
      // Group scaling pads M to a multiple of 4 (cuBLASLt's VEC128 mode needs it).
      const int64_t Mp = round_up(M, 4);
      at::Tensor xg = pad(x, Mp, Kg);
      Fp8Activation g = quantize_activation(x, ActScaling::group, Fp8Format::e4m3, pow2);
      at::Tensor sg = ref_scales(xg, 1, 128, Fp8Format::e4m3, pow2);  // [Mp, Kg/128]
      CHECK(g.rows == M);
      CHECK(g.scale.sizes() == at::IntArrayRef({Kg / 128, Mp}));
      CHECK(at::equal(g.scale, sg.t()));
      CHECK(bits_equal(g.data, ref_data(xg, sg, 1, 128, Fp8Format::e4m3)));

      Fp8Activation t = quantize_activation(x, ActScaling::token, Fp8Format::e4m3, pow2);
      at::Tensor st = ref_scales(xp, 1, Kp, Fp8Format::e4m3, pow2);
      CHECK(at::equal(t.scale, st.reshape({M})));
      CHECK(bits_equal(t.data, ref_data(xp, st, 1, Kp, Fp8Format::e4m3)));

      Fp8Activation n = quantize_activation(x, ActScaling::tensor, Fp8Format::e4m3, pow2);
      at::Tensor sn = ref_scales(xp, M, Kp, Fp8Format::e4m3, pow2);
      CHECK(at::equal(n.scale, sn.reshape({1})));
      CHECK(bits_equal(n.data, ref_data(xp, sn, M, Kp, Fp8Format::e4m3)));
    }
  }
}

TEST_CASE("all-zero tiles get scale 1 and zero data, and pow2 scales are powers of two covering amax",
          "[quant][scaling]") {
  at::Tensor w = at::zeros({256, 512});
  w.narrow(0, 0, 128).narrow(1, 0, 128).fill_(3.0);  // one non-zero block
  Fp8Weight q = quantize_weight(w, WeightScaling::block, Fp8Format::e4m3, false);
  CHECK(q.scale[0][0].item<float>() == 3.0f / 448.0f);
  CHECK(q.scale[1][1].item<float>() == 1.0f);
  CHECK(at::equal(q.data.narrow(0, 128, 128).view(at::kByte), at::zeros({128, 512}, at::kByte)));

  at::manual_seed(9);
  at::Tensor x = at::randn({5, 512}) * 37;
  Fp8Activation a = quantize_activation(x, ActScaling::group, Fp8Format::e4m3, /*pow2=*/true);
  at::Tensor amax = x.abs().reshape({5, 4, 128}).amax(2).t();  // [4, 5]; scales are [4, 8] (M padded to 8)
  at::Tensor log2 = a.scale.log2();
  CHECK(at::equal(a.scale.narrow(1, 5, 3), at::ones({4, 3})));  // padded rows: scale 1
  CHECK(at::equal(log2, log2.round()));               // exact powers of two
  CHECK((a.scale.narrow(1, 0, 5) * 448 >= amax).all().item<bool>());  // no value saturates
  CHECK((a.scale.narrow(1, 0, 5) * 448 < 2 * amax).all().item<bool>());
}

// A block or group whose amax is tiny (below ~5e-36 for E4M3): amax / 448 is below FLT_MIN, and
// an unclamped scale made 1 / s = inf, turning the block's zeros and padding into NaN (0 * inf).
// The scale is held at FLT_MIN: zeros stay zero and the dequantized values stay finite.
TEST_CASE("a tiny amax keeps a finite reciprocal scale: zeros and padding stay zero, not NaN", "[quant][scaling]") {
  CHECK(scale_from_amax(1e-37f, 448.0f, false) == 1.17549435e-38f);
  CHECK(scale_from_amax(1e-37f, 57344.0f, false) == 1.17549435e-38f);
  CHECK(std::isfinite(1.0f / scale_from_amax(1e-44f, 448.0f, false)));
  at::Tensor w = at::zeros({1, 1});
  w[0][0] = 1e-37f;
  for (const Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    const Fp8Weight q = quantize_weight(w, WeightScaling::block, f, false);
    CHECK(at::isfinite(dequantize(q)).all().item<bool>());
    CHECK((q.data.view(at::kByte).flatten().narrow(0, 1, q.data.numel() - 1) == 0).all().item<bool>());
  }
  at::Tensor x = at::zeros({3, 128});
  x[1][5] = -2e-37f;
  const Fp8Activation a = quantize_activation(x, ActScaling::group, Fp8Format::e4m3, false);
  CHECK(at::isfinite(dequantize(a)).all().item<bool>());
  CHECK(dequantize(a)[0][0].item<float>() == 0.0f);
}

TEST_CASE("dequantize(quantize(w)) is within E4M3's rounding error", "[quant][scaling]") {
  at::manual_seed(10);
  at::Tensor w = at::randn({130, 257}) * 0.02;
  for (WeightScaling sc : {WeightScaling::tensor, WeightScaling::channel, WeightScaling::block}) {
    at::Tensor d = dequantize(quantize_weight(w, sc, Fp8Format::e4m3, false));
    REQUIRE(d.sizes() == w.sizes());
    // E4M3 keeps 3 mantissa bits: a normal value is off by at most half an ulp, 2^-4 relative;
    // values below the smallest normal (2^-6 * s) are off by at most half the subnormal step
    // 2^-10 * s. s <= amax / 448 with amax <= max|w|.
    const double s_max = w.abs().max().item<double>() / 448.0;
    at::Tensor bound = w.abs() * (1.0 / 16) + s_max * std::ldexp(1.0, -10) + 1e-12;
    INFO("scaling=" << to_string(sc));
    CHECK(((d - w).abs() <= bound).all().item<bool>());
  }
  at::Tensor x = at::randn({7, 200});
  at::Tensor dx = dequantize(quantize_activation(x, ActScaling::group, Fp8Format::e4m3, false));
  CHECK(dx.sizes() == x.sizes());
  CHECK(((dx - x).abs() <= x.abs() / 16 + x.abs().max() / 448 / 1024 + 1e-12).all().item<bool>());
}

TEST_CASE("NaN and inf are refused with the tensor's name, and empty inputs work", "[quant][scaling]") {
  at::Tensor w = at::ones({4, 4});
  w[2][3] = NAN;
  REQUIRE_THROWS_CONTAINING(quantize_weight(w, WeightScaling::block, Fp8Format::e4m3, false, "layers.3.mlp.up_proj"),
                            RuntimeFailure, "layers.3.mlp.up_proj of shape [4, 4] holds NaN or inf");
  at::Tensor x = at::ones({2, 8});
  x[1][1] = -INFINITY;
  REQUIRE_THROWS_CONTAINING(quantize_activation(x, ActScaling::token, Fp8Format::e4m3, false), RuntimeFailure,
                            "holds NaN or inf");
  Fp8Activation e = quantize_activation(at::empty({0, 256}), ActScaling::group, Fp8Format::e4m3, false);
  CHECK(e.data.sizes() == at::IntArrayRef({0, 512}));
  CHECK(e.scale.sizes() == at::IntArrayRef({4, 0}));
  CHECK(quantize_activation(at::empty({0, 256}), ActScaling::tensor, Fp8Format::e4m3, false).scale.item<float>() == 1.0f);
}

TEST_CASE("scaling names parse", "[quant][scaling]") {
  CHECK(parse_weight_scaling("block") == WeightScaling::block);
  CHECK(parse_act_scaling("token") == ActScaling::token);
  CHECK_THROWS_AS(parse_weight_scaling("row"), ConfigError);
  CHECK_THROWS_AS(parse_act_scaling("block"), ConfigError);
  CHECK(scale_from_amax(0.0f, 448.0f, true) == 1.0f);
  CHECK(scale_from_amax(448.0f, 448.0f, true) == 1.0f);
  CHECK(scale_from_amax(449.0f, 448.0f, true) == 2.0f);
  CHECK(scale_from_amax(1.0f, 448.0f, true) == std::ldexp(1.0f, -8));  // 1/448 -> 2^-8 (=1/256)
}

TEST_CASE("transpose_weight is exact for block and tensor scaling", "[quant][scaling]") {
  at::manual_seed(14);
  at::Tensor w = at::randn({130, 257});
  for (WeightScaling sc : {WeightScaling::block, WeightScaling::tensor}) {
    Fp8Weight q = quantize_weight(w, sc, Fp8Format::e4m3, false);
    Fp8Weight t = transpose_weight(q);
    CHECK(t.out_features == 257);
    CHECK(t.in_features == 130);
    CHECK(at::equal(dequantize(t), dequantize(q).t()));
    // The layout of a fresh [257, 130] weight: what an FP8 GEMM pairs with activations of K = 130.
    const Fp8Weight fresh = quantize_weight(w.t().contiguous(), sc, Fp8Format::e4m3, false);
    CHECK(t.data.sizes() == fresh.data.sizes());
    CHECK(t.scale.sizes() == fresh.scale.sizes());
  }
  CHECK_THROWS_AS(transpose_weight(quantize_weight(w, WeightScaling::channel, Fp8Format::e4m3, false)),
                  std::logic_error);
}
