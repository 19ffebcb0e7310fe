// Fp8Linear on CPU: forward equals the dequantized product; dX and the bias gradient equal
// autograd through the dequantized weight; in-place requantization keeps the storage.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "core/util/error.h"
#include "quant/fp8_linear.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using namespace fp8rl;
using namespace fp8rl::quant;

TEST_CASE("Fp8Linear forward and backward match the dequantized layer", "[quant][fp8_linear]") {
  at::manual_seed(21);
  struct Pair { WeightScaling w; ActScaling a; };
  for (Pair p : {Pair{WeightScaling::block, ActScaling::group}, Pair{WeightScaling::channel, ActScaling::token},
                 Pair{WeightScaling::tensor, ActScaling::tensor}}) {
    at::Tensor w = at::randn({130, 200}) * 0.05;
    at::Tensor bias = at::randn({130}).set_requires_grad(true);
    Fp8Linear layer(quantize_weight(w, p.w, Fp8Format::e4m3, false), bias, p.a, false);
    at::Tensor x = at::randn({3, 5, 200}).set_requires_grad(true);
    at::Tensor y = layer.forward(x);
    REQUIRE(y.sizes() == at::IntArrayRef({3, 5, 130}));

    // Reference: the same quantized operands, dequantized, through plain autograd.
    at::Tensor x_ref = x.detach().clone().set_requires_grad(true);
    at::Tensor b_ref = bias.detach().clone().set_requires_grad(true);
    at::Tensor xq = dequantize(quantize_activation(x_ref.detach().reshape({15, 200}), p.a, Fp8Format::e4m3, false));
    // Straight-through: the forward uses the quantized x, the gradient flows to x unchanged.
    at::Tensor x_st = x_ref.reshape({15, 200}) + (xq - x_ref.reshape({15, 200})).detach();
    at::Tensor y_ref = (at::matmul(x_st, dequantize(layer.weight()).t()) + b_ref).reshape({3, 5, 130});
    INFO("scaling " << to_string(p.w));
    // Same float32 products, different summation order: 1e-5 relative.
    CHECK(at::allclose(y, y_ref, 1e-5, 1e-5));
    at::Tensor g = at::randn({3, 5, 130});
    (y * g).sum().backward();
    (y_ref * g).sum().backward();
    CHECK(at::allclose(x.grad(), x_ref.grad(), 1e-5, 1e-5));
    CHECK(at::allclose(bias.grad(), b_ref.grad(), 1e-5, 1e-5));
  }
}

TEST_CASE("requantize_ writes into the same FP8 storage", "[quant][fp8_linear]") {
  at::manual_seed(22);
  for (WeightScaling ws : {WeightScaling::tensor, WeightScaling::channel, WeightScaling::block}) {
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      INFO(to_string(ws) << " " << dt);
      const ActScaling as = ws == WeightScaling::block     ? ActScaling::group
                            : ws == WeightScaling::channel ? ActScaling::token
                                                           : ActScaling::tensor;
      Fp8Linear layer(quantize_weight(at::randn({130, 300}), ws, Fp8Format::e4m3, false), {}, as, false);
      const Fp8Weight copy = layer.weight();  // another holder of the same storage
      const void* data = layer.weight().data.data_ptr();
      const void* scale = layer.weight().scale.data_ptr();
      at::Tensor flag = at::zeros({1}, at::kInt);
      at::Tensor w2 = (at::randn({130, 300}) * 3).to(dt);
      layer.requantize_(w2, flag);
      CHECK(layer.weight().data.data_ptr() == data);
      CHECK(layer.weight().scale.data_ptr() == scale);
      CHECK(flag.item<int>() == 0);
      // Bit for bit the CPU reference's quantization of the new values, seen by every holder.
      const Fp8Weight fresh = quantize_weight_reference(w2, ws, Fp8Format::e4m3, false);
      CHECK(at::equal(copy.scale, fresh.scale));
      CHECK(at::equal(copy.data.view(at::kByte), fresh.data.view(at::kByte)));
    }
  }
}

TEST_CASE("requantize_ raises the non-finite flag instead of throwing", "[quant][fp8_linear]") {
  Fp8Linear layer(quantize_weight(at::randn({64, 512}), WeightScaling::block, Fp8Format::e4m3, false), {},
                  ActScaling::group, false);
  at::Tensor flag = at::zeros({1}, at::kInt);
  at::Tensor w2 = at::randn({64, 512});
  w2[63][511] = NAN;
  layer.requantize_(w2, flag);
  CHECK(flag.item<int>() == 1);
  REQUIRE_THROWS_CONTAINING(throw_if_nonfinite(flag, "layers.0.mlp.up_proj.weight"), RuntimeFailure,
                            "layers.0.mlp.up_proj.weight holds NaN or inf");
  // The flag accumulates over a step: a later finite matrix does not clear it.
  layer.requantize_(at::randn({64, 512}), flag);
  CHECK(flag.item<int>() == 1);
  flag.zero_();
  at::Tensor w3 = at::randn({64, 512});
  w3[0][0] = -INFINITY;
  layer.requantize_(w3, flag);
  CHECK(flag.item<int>() == 1);
  // Wrong shape or flag: refused before anything is written.
  CHECK_THROWS_AS(layer.requantize_(at::randn({64, 511}), flag), std::logic_error);
  CHECK_THROWS_AS(layer.requantize_(at::randn({64, 512}), at::zeros({1}, at::kFloat)), std::logic_error);
}

TEST_CASE("backward holds the FP8 weight tensors, not the layer", "[quant][fp8_linear]") {
  at::manual_seed(23);
  at::Tensor w = at::randn({130, 200}) * 0.05;
  at::Tensor x = at::randn({4, 200}).set_requires_grad(true);
  at::Tensor y, w_deq;
  {
    // The layer dies before backward: the graph must not reach back into it.
    Fp8Linear layer(quantize_weight(w, WeightScaling::block, Fp8Format::e4m3, false), {}, ActScaling::group, false);
    y = layer.forward(x);
    w_deq = dequantize(layer.weight());
  }
  at::Tensor g = at::randn({4, 130});
  y.backward(g);
  // dX = dY @ dequantize(W) on CPU: same float32 products (matmul either way), 1e-5 relative.
  CHECK(at::allclose(x.grad(), at::matmul(g, w_deq), 1e-5, 1e-5));
}

TEST_CASE("backward after an in-place requantization is refused by autograd", "[quant][fp8_linear]") {
  at::manual_seed(24);
  Fp8Linear layer(quantize_weight(at::randn({64, 512}), WeightScaling::block, Fp8Format::e4m3, false), {},
                  ActScaling::group, false);
  at::Tensor x = at::randn({4, 512}).set_requires_grad(true);
  at::Tensor y = layer.forward(x);
  layer.requantize_(at::randn({64, 512}), at::zeros({1}, at::kInt));
  // The saved weight tensors' version counters moved: differentiating through the new values
  // would be silently wrong, so autograd's in-place check must fire.
  REQUIRE_THROWS_CONTAINING(y.sum().backward(), c10::Error, "modified by an inplace operation");
}

TEST_CASE("Fp8Weight records pow2 and requantize_ keeps it", "[quant][fp8_linear]") {
  at::manual_seed(25);
  for (bool pow2 : {false, true}) {
    for (WeightScaling ws : {WeightScaling::tensor, WeightScaling::channel, WeightScaling::block}) {
      INFO("pow2=" << pow2 << " " << to_string(ws));
      Fp8Weight q = quantize_weight(at::randn({130, 200}), ws, Fp8Format::e4m3, pow2);
      CHECK(q.pow2 == pow2);
      CHECK(quantize_weight_reference(at::randn({3, 5}), ws, Fp8Format::e4m3, pow2).pow2 == pow2);
      if (ws != WeightScaling::channel) CHECK(transpose_weight(q).pow2 == pow2);
      Fp8Linear layer(q, {}, ws == WeightScaling::block ? ActScaling::group
                             : ws == WeightScaling::channel ? ActScaling::token : ActScaling::tensor, false);
      at::Tensor w2 = at::randn({130, 200}) * 0.37;  // amax / 448 is not a power of two
      layer.requantize_(w2, at::zeros({1}, at::kInt));
      CHECK(layer.weight().pow2 == pow2);
      // Same scales (and bytes) as a fresh quantization with the recorded setting.
      const Fp8Weight fresh = quantize_weight(w2, ws, Fp8Format::e4m3, pow2);
      CHECK(at::equal(layer.weight().scale, fresh.scale));
      CHECK(at::equal(layer.weight().data.view(at::kByte), fresh.data.view(at::kByte)));
    }
  }
}

TEST_CASE("fp8_linear_grad_weight on CPU is dY^T X within float32's summation error", "[quant][fp8_linear]") {
  at::manual_seed(26);
  const Fp8Weight w = quantize_weight(at::randn({130, 200}), WeightScaling::block, Fp8Format::e4m3, false);
  for (int64_t M : {0, 1, 300}) {
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      INFO("M=" << M << " " << dt);
      at::Tensor dy = at::randn({M, 130}).to(dt), x = at::randn({M, 200}).to(dt);
      at::Tensor dw = fp8_linear_grad_weight(dy, x, w, ActScaling::group);
      REQUIRE(dw.sizes() == at::IntArrayRef({130, 200}));
      CHECK(dw.scalar_type() == at::kFloat);
      at::Tensor a = dy.to(at::kDouble), b = x.to(at::kDouble);
      at::Tensor exact = at::matmul(a.t(), b);
      // A float32 dot product of length M is within M * u * sum_m |dY_mn X_mk| of the exact one
      // (u = 2^-24; the classic bound for any summation order, FMA or blocked). The inputs are
      // exact in float32 (bf16 converts exactly), so that bound is the whole error.
      at::Tensor bound = static_cast<double>(std::max<int64_t>(M, 1)) * std::ldexp(1.0, -24) *
                         at::matmul(a.abs().t(), b.abs());
      CHECK(((dw.to(at::kDouble) - exact).abs() <= bound).all().item<bool>());
    }
  }
  // Leading dims fold into M.
  at::Tensor dy = at::randn({3, 5, 130}), x = at::randn({3, 5, 200});
  CHECK(at::allclose(fp8_linear_grad_weight(dy, x, w, ActScaling::group),
                     fp8_linear_grad_weight(dy.reshape({15, 130}), x.reshape({15, 200}), w, ActScaling::group)));
  CHECK_THROWS_AS(fp8_linear_grad_weight(at::randn({4, 130}), at::randn({5, 200}), w, ActScaling::group),
                  std::logic_error);
  CHECK_THROWS_AS(fp8_linear_grad_weight(at::randn({4, 130}), at::randn({4, 201}), w, ActScaling::group),
                  std::logic_error);
}

TEST_CASE("a NaN or inf input to an FP8 linear is refused, naming the layer", "[quant][fp8_linear]") {
  at::manual_seed(27);
  const Fp8Weight w = quantize_weight(at::randn({130, 200}), WeightScaling::block, Fp8Format::e4m3, false);
  Fp8Linear named(w, {}, ActScaling::group, false, "model.layers.3.mlp.up_proj");
  Fp8Linear unnamed(w, {}, ActScaling::group, false);
  at::Tensor x = at::randn({2, 3, 200});
  x[1][2][7] = NAN;
  REQUIRE_THROWS_CONTAINING(named.forward(x), RuntimeFailure, "input of model.layers.3.mlp.up_proj");
  REQUIRE_THROWS_CONTAINING(unnamed.forward(x), RuntimeFailure, "input of FP8 linear [130 x 200]");
  x[1][2][7] = INFINITY;
  REQUIRE_THROWS_CONTAINING(named.forward(x.to(at::kBFloat16)), RuntimeFailure, "holds NaN or inf");
  // CPU layers have no device flag: the step-level check has nothing to read.
  CHECK_FALSE(named.nonfinite_input_flag().defined());
  CHECK_NOTHROW(check_fp8_inputs_finite({&named, &unnamed, nullptr}));
  CHECK_NOTHROW(named.forward(at::randn({4, 200})));
}
