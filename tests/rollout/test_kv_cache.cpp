// rollout/kv_cache.h on the CPU: a cache made with a KvDirectory writes its addresses there and
// uses the directory's FP8 scales, so a second cache (the next rollout's) is found at the same
// place; writes and gathers are unchanged by it.
#include <cmath>
#include <cstdint>
#include <limits>

#include "rollout/kv_cache.h"
#include "tests/catch.h"

using namespace fp8rl::rollout;

namespace {
int64_t address(const at::Tensor& t) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(t.data_ptr())); }
}  // namespace

TEST_CASE("KV cache directory: each cache's addresses and the shared FP8 scales", "[rollout][kv_cache]") {
  const KvCacheShape shape{3, 2, 16, 4, at::kFloat, at::kCPU, /*fp8=*/true};
  KvDirectory dir(3, at::kCPU);
  auto bases_of = [&](int64_t layer) {
    const int64_t* p = reinterpret_cast<const int64_t*>(dir.bases(layer));
    return std::pair{p[0], p[1]};
  };
  at::Tensor first_scale;
  {
    KvCache a(shape, 5, &dir);
    for (int64_t l = 0; l < 3; ++l) {
      CHECK(bases_of(l) == std::pair{address(a.k(l)), address(a.v(l))});
      CHECK(a.bases(l) == dir.bases(l));
    }
    // The first write sets the layer's scales, in the directory's tensor.
    const at::Tensor slots = at::arange(4, at::kLong);
    const at::Tensor k = at::randn({4, 2, 16}), v = at::randn({4, 2, 16});
    a.write(1, slots, k, v);
    first_scale = a.k_scale(1).clone();
    CHECK(first_scale.item<float>() != 1.0f);
    auto [gk, gv] = a.gather(1, slots);
    CHECK(at::allclose(gk, k, 0.07, 0.07 * first_scale.item<float>()));  // E4M3: ~3% per element
    a.release();
  }
  KvCache b(shape, 7, &dir);  // the next rollout's: its own addresses, scales reset to 1
  for (int64_t l = 0; l < 3; ++l) CHECK(bases_of(l) == std::pair{address(b.k(l)), address(b.v(l))});
  CHECK(b.k_scale(1).item<float>() == 1.0f);
  CHECK(b.bases(0) == dir.bases(0));
  KvCache plain(shape, 2);
  CHECK(plain.bases(0) == nullptr);
  KvDirectory other(2, at::kCPU);
  CHECK_THROWS(KvCache(shape, 2, &other));  // made for two layers
}

// A layer whose first write is all zeros gets scale 1 (as quant/'s zero blocks): with a tiny
// scale every later K/V of the rollout would saturate at 448 times it. An empty first write
// leaves the layer uncalibrated, for the next write to set.
TEST_CASE("KV cache: an all-zero or empty first write does not pin a layer's FP8 scale", "[rollout][kv_cache]") {
  const KvCacheShape shape{2, 2, 16, 4, at::kFloat, at::kCPU, /*fp8=*/true};
  KvCache c(shape, 4);
  c.write(0, at::arange(2, at::kLong), at::zeros({2, 2, 16}), at::zeros({2, 2, 16}));
  CHECK(c.k_scale(0).item<float>() == 1.0f);
  CHECK(c.v_scale(0).item<float>() == 1.0f);
  const at::Tensor later = at::full({1, 2, 16}, 100.0f);
  c.write(0, at::arange(2, 3, at::kLong), later, later);
  auto [k, v] = c.gather(0, at::arange(2, 3, at::kLong));
  CHECK(at::allclose(k, later, 0.07, 0));
  c.write(1, at::empty({0}, at::kLong), at::empty({0, 2, 16}), at::empty({0, 2, 16}));
  CHECK_FALSE(c.scales_set(1));
  c.write(1, at::arange(1, at::kLong), later, later);
  CHECK(c.scales_set(1));
  CHECK(std::abs(c.k_scale(1).item<float>() - 100.0 * 2.0 / 448.0) < 1e-6);  // headroom 2 over the amax
}

// A first write holding NaN or inf (one sequence gone bad) sets the scale from its finite values,
// so the other sequences' keys and values stay what they would be without it.
TEST_CASE("KV cache: a non-finite first write does not poison a layer's FP8 scale", "[rollout][kv_cache]") {
  const KvCacheShape shape{1, 2, 16, 4, at::kFloat, at::kCPU, /*fp8=*/true};
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    INFO("bad value " << bad);
    KvCache c(shape, 4);
    at::Tensor x = at::linspace(-3.0, 5.0, 3 * 2 * 16).view({3, 2, 16});
    x.index_put_({1, 0, 3}, bad);
    c.write(0, at::arange(3, at::kLong), x, x);
    CHECK(std::abs(c.k_scale(0).item<float>() - 5.0 * 2.0 / 448.0) < 1e-6);
    CHECK(std::abs(c.v_scale(0).item<float>() - 5.0 * 2.0 / 448.0) < 1e-6);
    auto [k, v] = c.gather(0, at::tensor({0, 2}, at::kLong));
    const at::Tensor good = x.index_select(0, at::tensor({0, 2}, at::kLong));
    CHECK(at::allclose(k, good, 0.07, 0.02));
    CHECK(at::allclose(v, good, 0.07, 0.02));
  }
}
