// FP8 formats against an implementation we did not write: c10's Float8 types.
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e5m2.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/util/error.h"
#include "quant/fp8_format.h"
#include "tests/catch.h"

using namespace fp8rl;
using namespace fp8rl::quant;

namespace {

float bf16_bits_to_float(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// c10's conversion, with our saturation applied first (c10 turns |x| >= max + half-ulp into NaN
// for e4m3fn and inf for e5m2; we saturate, as __NV_SATFINITE does).
uint8_t c10_encode(float x, Fp8Format f) {
  const float max = fp8_spec(f).max;
  if (!std::isnan(x)) x = std::fmin(std::fmax(x, -max), max);
  if (f == Fp8Format::e4m3) return c10::Float8_e4m3fn(x).x;
  return c10::Float8_e5m2(x).x;
}

}  // namespace

TEST_CASE("decode matches c10 for all 256 codes", "[fp8]") {
  for (int b = 0; b < 256; ++b) {
    const uint8_t bits = static_cast<uint8_t>(b);
    float ours4 = fp8_to_float(bits, Fp8Format::e4m3);
    float ref4 = static_cast<float>(c10::Float8_e4m3fn(bits, c10::Float8_e4m3fn::from_bits()));
    INFO("e4m3 code " << b);
    CHECK(((std::isnan(ours4) && std::isnan(ref4)) || ours4 == ref4));
    float ours5 = fp8_to_float(bits, Fp8Format::e5m2);
    float ref5 = static_cast<float>(c10::Float8_e5m2(bits, c10::Float8_e5m2::from_bits()));
    INFO("e5m2 code " << b);
    CHECK(((std::isnan(ours5) && std::isnan(ref5)) || ours5 == ref5));
  }
}

TEST_CASE("encode matches c10 on every bfloat16 value and on random float32 values", "[fp8]") {
  for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
    int mismatches = 0;
    for (uint32_t b = 0; b < 65536; ++b) {
      float x = bf16_bits_to_float(static_cast<uint16_t>(b));
      if (std::isnan(x)) continue;
      if (float_to_fp8(x, f) != c10_encode(x, f)) ++mismatches;
    }
    // float32 inputs exercise rounding of the low mantissa bits (ties, near-ties, subnormals).
    std::mt19937 rng(123);
    std::uniform_real_distribution<float> mant(1.0f, 2.0f);
    std::uniform_int_distribution<int> expo(-24, 17);
    for (int i = 0; i < 200000; ++i) {
      float x = std::ldexp(mant(rng), expo(rng)) * (i % 2 ? -1.0f : 1.0f);
      if (float_to_fp8(x, f) != c10_encode(x, f)) ++mismatches;
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("saturation, zero, inf and NaN", "[fp8]") {
  CHECK(fp8_to_float(float_to_fp8(1e9f, Fp8Format::e4m3), Fp8Format::e4m3) == 448.0f);
  CHECK(fp8_to_float(float_to_fp8(-INFINITY, Fp8Format::e4m3), Fp8Format::e4m3) == -448.0f);
  CHECK(fp8_to_float(float_to_fp8(460.0f, Fp8Format::e4m3), Fp8Format::e4m3) == 448.0f);
  CHECK(fp8_to_float(float_to_fp8(INFINITY, Fp8Format::e5m2), Fp8Format::e5m2) == 57344.0f);
  CHECK(float_to_fp8(0.0f, Fp8Format::e4m3) == 0x00);
  CHECK(float_to_fp8(-0.0f, Fp8Format::e4m3) == 0x80);
  CHECK(std::isnan(fp8_to_float(float_to_fp8(NAN, Fp8Format::e4m3), Fp8Format::e4m3)));
  // Smallest E4M3 subnormal is 2^-9; half of it is a tie that rounds to even (zero).
  CHECK(fp8_to_float(float_to_fp8(std::ldexp(1.0f, -9), Fp8Format::e4m3), Fp8Format::e4m3) == std::ldexp(1.0f, -9));
  CHECK(float_to_fp8(std::ldexp(1.0f, -10), Fp8Format::e4m3) == 0x00);
  CHECK(parse_fp8_format("e5m2") == Fp8Format::e5m2);
  CHECK_THROWS_AS(parse_fp8_format("e3m4"), ConfigError);
}
