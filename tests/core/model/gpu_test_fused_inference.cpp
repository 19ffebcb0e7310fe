// The decoder's fused inference kernels (core/model/cuda/fused_inference.cu: RMSNorm, RoPE,
// SiLU-mul) against the ATen ops they replace under InferenceMode (the same rms_norm / apply_rope
// / silu_mul outside it). Awkward shapes:
// 1, 17 and 1025 tokens, 1 to 16 heads, head and hidden sizes 16 to 5120, and the strided head
// views a fused q/k/v projection hands to the q/k norms. The RMSNorm kernel has four variants
// (a warp or a block per row; 16-byte or scalar loads), all covered: 1100-wide rows at an odd
// stride take the block-per-row scalar one.
//
// Tolerances: apply_rope rounds its three products and sum exactly as ATen does -> bit-exact.
// rms_norm sums the squares in another order, so rsqrt(mean + eps) can differ in its last float
// bits; the normalised x, rounded to bf16 before the weight multiplies it (as HF does), then
// differs by one ulp where it sits on a rounding boundary, and the product, rounded again, by up
// to two ulps of the output (seen on 5120-wide rows on H200): at most two ulps anywhere, and
// >= 99% of elements bit-exact.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/core/InferenceMode.h>

#include <tuple>
#include <vector>

#include "core/model/cuda/fused_inference.h"
#include "core/model/layers.h"
#include "tests/catch.h"

using namespace fp8rl::model;

TEST_CASE("fused RMSNorm and RoPE under InferenceMode equal the ATen ops", "[model][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(11);
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf})
    for (const int64_t n : {1, 17, 1025})
      for (const auto& [heads, dim] : std::vector<std::pair<int64_t, int64_t>>{{1, 5120}, {16, 128}, {3, 64}, {8, 16}, {2, 1100}, {5, 24}}) {
        const auto opts = at::TensorOptions().device(at::kCUDA).dtype(dtype);
        // A fused projection's output, of which x is a strided head view (as q of qkv).
        const at::Tensor packed = at::randn({n, heads * dim + 32}, opts) * 3;
        const at::Tensor x = packed.narrow(1, 0, heads * dim).view({n, heads, dim});
        const at::Tensor w = at::randn({dim}, opts);
        const at::Tensor cos = at::randn({n, dim}, opts), sin = at::randn({n, dim}, opts);
        const at::Tensor ref_norm = rms_norm(x, w, 1e-6), ref_rope = apply_rope(x, cos, sin);
        const at::Tensor ref_norm2d = rms_norm(x.reshape({n * heads, dim}), w, 1e-6);
        at::Tensor got_norm, got_rope, got_norm2d;
        {
          c10::InferenceMode inference;
          got_norm = rms_norm(x, w, 1e-6);
          got_rope = apply_rope(x, cos, sin);
          got_norm2d = rms_norm(x.reshape({n * heads, dim}), w, 1e-6);
        }
        INFO(c10::toString(dtype) << " n " << n << " heads " << heads << " dim " << dim);
        CHECK(at::equal(got_rope, ref_rope));
        for (const auto& [got, ref] : {std::pair{got_norm, ref_norm}, std::pair{got_norm2d, ref_norm2d}}) {
          REQUIRE(got.sizes() == ref.sizes());
          const at::Tensor g = got.to(at::kFloat), r = ref.to(at::kFloat);
          const double ulp = dtype == at::kBFloat16 ? 1.0 / 128 : 1.0 / 1024;  // at the bottom of a binade
          // Two ulps of each element's magnitude (plus the subnormal floor).
          CHECK(((g - r).abs() <= r.abs() * 2 * ulp * 1.01 + 1e-6).all().item<bool>());
          CHECK((g == r).to(at::kFloat).mean().item<double>() >= 0.99);
        }
      }
}

TEST_CASE("fused SiLU-mul under InferenceMode equals at::silu(gate) * up bit for bit", "[model][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(12);
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf})
    for (const int64_t n : {1, 17, 1025})
      for (const int64_t inter : {8, 12288, 5, 1100}) {
        const auto opts = at::TensorOptions().device(at::kCUDA).dtype(dtype);
        // Contiguous, and a view with padded rows (8 extra: 16-byte loads; 3 extra: the scalar path).
        const at::Tensor full = at::randn({n, 2 * inter}, opts) * 4;
        const at::Tensor padded8 = (at::randn({n, 2 * inter + 8}, opts) * 4).narrow(1, 0, 2 * inter);
        const at::Tensor padded3 = (at::randn({n, 2 * inter + 3}, opts) * 4).narrow(1, 0, 2 * inter);
        for (const at::Tensor& gu : {full, padded8, padded3}) {
          const at::Tensor ref = silu_mul(gu);
          at::Tensor got;
          {
            c10::InferenceMode inference;
            got = silu_mul(gu);
          }
          INFO(c10::toString(dtype) << " n " << n << " inter " << inter << " row stride " << gu.stride(0));
          REQUIRE(got.sizes() == ref.sizes());
          CHECK(at::equal(got, ref));
        }
      }
}

// q/k norm + RoPE in one kernel (qk_norm_rope) against the two fused kernels it replaces and the
// ATen ops: q and k as the strided head views of a fused qkv output (the decoder's case; head
// sizes 24-256), and as separate tensors with a row stride that is not a multiple of 8, or a
// head size of 6 (the two-kernel fallback); with and without the norms (Llama/Qwen2 have none).
// Bit-exact with the two kernels (same element assignment and reduction order); within
// rms_norm's tolerance of ATen.
TEST_CASE("fused q/k norm + RoPE equals rms_norm then apply_rope", "[model][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  at::manual_seed(13);
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf})
    for (const int64_t n : {1, 17, 1025})
      for (const auto& [hq, hkv, dim] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{32, 8, 128}, {16, 2, 64}, {3, 1, 24}, {4, 4, 256}, {5, 1, 6}})
        for (const bool fused_qkv : {true, false})
          for (const bool norm : {true, false}) {
            const auto opts = at::TensorOptions().device(at::kCUDA).dtype(dtype);
            at::Tensor q, k;
            if (fused_qkv) {
              const at::Tensor qkv = at::randn({n, (hq + 2 * hkv) * dim}, opts) * 3;
              q = qkv.narrow(1, 0, hq * dim).view({n, hq, dim});
              k = qkv.narrow(1, hq * dim, hkv * dim).view({n, hkv, dim});
            } else {
              q = (at::randn({n, hq * dim + 3}, opts) * 3).narrow(1, 0, hq * dim).view({n, hq, dim});
              k = (at::randn({n, hkv * dim + 3}, opts) * 3).narrow(1, 0, hkv * dim).view({n, hkv, dim});
            }
            const at::Tensor wq = norm ? at::randn({dim}, opts) : at::Tensor(), wk = norm ? at::randn({dim}, opts) : at::Tensor();
            const at::Tensor cos = at::randn({n, dim}, opts), sin = at::randn({n, dim}, opts);
            auto unfused = [&](const at::Tensor& x, const at::Tensor& w) { return apply_rope(w.defined() ? rms_norm(x, w, 1e-6) : x, cos, sin); };
            const at::Tensor ref_q = unfused(q, wq), ref_k = unfused(k, wk);  // ATen ops
            at::Tensor got_q, got_k, kern_q, kern_k;
            {
              c10::InferenceMode inference;
              std::tie(got_q, got_k) = qk_norm_rope(q, k, wq, wk, 1e-6, cos, sin);
              kern_q = unfused(q, wq);  // the two fused kernels
              kern_k = unfused(k, wk);
            }
            INFO(c10::toString(dtype) << " n " << n << " hq " << hq << " hkv " << hkv << " dim " << dim
                                      << (fused_qkv ? " qkv views" : " odd strides") << (norm ? " norm" : " no norm"));
            REQUIRE(got_q.sizes() == q.sizes());
            REQUIRE(got_k.sizes() == k.sizes());
            CHECK(got_q.is_contiguous());
            // Equal to the two kernels everywhere (where the fused kernel does not apply, they are
            // what ran); where it applies, called directly so that a silent fallback cannot pass.
            CHECK(at::equal(got_q, kern_q));
            CHECK(at::equal(got_k, kern_k));
            if (fused_qkv && dim % 8 == 0) {
              c10::InferenceMode inference;
              const bool bf16 = dtype == at::kBFloat16;
              at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options());
              const fp8rl::cuda::QkNormRopeArgs a{{q.data_ptr(), n, hq, dim, q.stride(0), q.stride(1), bf16},
                                                  {k.data_ptr(), n, hkv, dim, k.stride(0), k.stride(1), bf16},
                                                  norm ? wq.data_ptr() : nullptr,
                                                  norm ? wk.data_ptr() : nullptr,
                                                  1e-6f,
                                                  cos.data_ptr(),
                                                  sin.data_ptr(),
                                                  dq.data_ptr(),
                                                  dk.data_ptr()};
              REQUIRE(fp8rl::cuda::qk_norm_rope_rows(a, at::cuda::getCurrentCUDAStream().stream()));
              CHECK(at::equal(dq, kern_q));
              CHECK(at::equal(dk, kern_k));
            }
            if (!norm) {
              CHECK(at::equal(got_q, ref_q));
              CHECK(at::equal(got_k, ref_k));
            }
            // Against ATen: the norm's two ulps, carried through RoPE's two products (|cos|, |sin|
            // up to ~4 here) and its rounding: a few ulps of the inputs' scale.
            for (const auto& [got, ref] : {std::pair{got_q, ref_q}, std::pair{got_k, ref_k}}) {
              const at::Tensor g = got.to(at::kFloat), r = ref.to(at::kFloat);
              CHECK((g == r).to(at::kFloat).mean().item<double>() >= 0.97);
            }
          }
}

// The residual add joined to a hidden-size RMSNorm (add_rms_norm): the sum bit for bit ATen's
// bf16/fp16 add, the norm bit for bit rms_norm's kernel on that sum (both under InferenceMode);
// rows of 1024 or fewer, or odd strides, take the two steps (the same results by construction).
TEST_CASE("fused residual add + RMSNorm equals the add, then rms_norm, bit for bit", "[model][gpu]") {
  if (!at::cuda::is_available()) SKIP_TEST("no CUDA device");
  c10::InferenceMode inference;
  at::manual_seed(14);
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf})
    for (const int64_t H : {1024, 1032, 4096, 5120})
      for (const int64_t N : {1, 17, 1025})
        for (const bool x_strided : {true, false}) {
          INFO(c10::toString(dtype) << " H=" << H << " N=" << N << " x strided " << x_strided);
          // One operand's rows strided, the other's contiguous, each way round.
          const auto opts = at::TensorOptions().device(at::kCUDA).dtype(dtype);
          const at::Tensor x = at::randn({N, H + (x_strided ? 8 : 0)}, opts).narrow(1, 0, H);
          const at::Tensor y = (at::randn({N, H + (x_strided ? 0 : 16)}, opts) * 0.5).narrow(1, 0, H);
          const at::Tensor w = (1 + 0.1 * at::randn({H}, at::kCUDA)).to(dtype);
          const auto [sum, normed] = add_rms_norm(x, y, w, 1e-6);
          const at::Tensor want_sum = x + y;
          CHECK(at::equal(sum, want_sum));
          CHECK(at::equal(normed, rms_norm(want_sum, w, 1e-6)));
        }
}
