// FP8 number formats (OCP FP8: E4M3 "fn" and E5M2) and their bit-exact CPU conversions.
//
// These are the reference numerics of the project: CUDA kernels are tested against them bit
// for bit, and they are tested against c10's Float8 types (tests/test_fp8_format.cpp).
//
//   E4M3: 1 sign, 4 exponent (bias 7), 3 mantissa; max 448; no inf; NaN = S.1111.111
//   E5M2: 1 sign, 5 exponent (bias 15), 2 mantissa; max 57344; inf and NaN like IEEE
//
// Quantization here always saturates: |x| beyond max (inf included) becomes +-max, as
// cuda_fp8.h's __NV_SATFINITE does, because a scale computed from amax can put a value a
// rounding step past max. NaN stays NaN; detecting it is the caller's job (see quantize).
#pragma once

#include <cstdint>
#include <string>

namespace fp8rl::quant {

enum class Fp8Format { e4m3, e5m2 };

struct Fp8Spec {
  int exponent_bits;
  int mantissa_bits;
  int bias;
  float max;  // largest finite value
};

constexpr Fp8Spec fp8_spec(Fp8Format f) {
  return f == Fp8Format::e4m3 ? Fp8Spec{4, 3, 7, 448.0f} : Fp8Spec{5, 2, 15, 57344.0f};
}

// "e4m3" | "e5m2"; throws ConfigError otherwise.
Fp8Format parse_fp8_format(const std::string& name);

// Round to nearest, ties to even, saturating to +-max. NaN -> the format's NaN (0x7F / 0x7F).
uint8_t float_to_fp8(float x, Fp8Format f);
float fp8_to_float(uint8_t bits, Fp8Format f);

}  // namespace fp8rl::quant
