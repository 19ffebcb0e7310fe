#include "quant/fp8_format.h"

#include <cmath>

#include "core/util/error.h"

namespace fp8rl::quant {

Fp8Format parse_fp8_format(const std::string& name) {
  if (name == "e4m3") return Fp8Format::e4m3;
  if (name == "e5m2") return Fp8Format::e5m2;
  throw ConfigError("FP8 format '" + name + "' is not one of: e4m3, e5m2");
}

uint8_t float_to_fp8(float x, Fp8Format f) {
  const Fp8Spec s = fp8_spec(f);
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return 0x7F;  // E4M3 NaN is S.1111.111; 0x7F is also a NaN in E5M2
  const double a = std::fabs(static_cast<double>(x));
  const int min_exp = 1 - s.bias;  // exponent of the smallest normal
  const int max_code_exp = (f == Fp8Format::e4m3) ? 15 : 30;
  const uint8_t max_code = static_cast<uint8_t>((max_code_exp << s.mantissa_bits) |
                                                ((f == Fp8Format::e4m3) ? 0x6 : 0x3));
  if (a >= s.max) return sign | max_code;
  if (a == 0) return sign;

  // Quantum (spacing of representable values) at a's binade; subnormals share the smallest.
  int e = std::ilogb(a);
  if (e < min_exp) e = min_exp;
  const double quantum = std::ldexp(1.0, e - s.mantissa_bits);
  // a / quantum is exact (power-of-two scaling); nearbyint rounds ties to even.
  const double k = std::nearbyint(a / quantum);
  const double value = k * quantum;
  if (value == 0) return sign;
  if (value >= s.max) return sign | max_code;

  int ve = std::ilogb(value);  // may be e + 1 when rounding carried into the next binade
  if (ve < min_exp) {         // subnormal: exponent field 0, value = man * 2^(min_exp - m)
    const int man = static_cast<int>(value / std::ldexp(1.0, min_exp - s.mantissa_bits));
    return sign | static_cast<uint8_t>(man);
  }
  const int man = static_cast<int>((value / std::ldexp(1.0, ve) - 1.0) * (1 << s.mantissa_bits));
  return sign | static_cast<uint8_t>(((ve + s.bias) << s.mantissa_bits) | man);
}

float fp8_to_float(uint8_t bits, Fp8Format f) {
  const Fp8Spec s = fp8_spec(f);
  const bool negative = bits & 0x80;
  const int exp_field = (bits >> s.mantissa_bits) & ((1 << s.exponent_bits) - 1);
  const int man = bits & ((1 << s.mantissa_bits) - 1);
  float v;
  if (f == Fp8Format::e4m3 && exp_field == 15 && man == 7) {
    v = NAN;
  } else if (f == Fp8Format::e5m2 && exp_field == 31) {
    v = man == 0 ? INFINITY : NAN;
  } else if (exp_field == 0) {
    v = static_cast<float>(std::ldexp(static_cast<double>(man), 1 - s.bias - s.mantissa_bits));
  } else {
    v = static_cast<float>(std::ldexp(1.0 + man / static_cast<double>(1 << s.mantissa_bits), exp_field - s.bias));
  }
  return negative ? -v : v;
}

}  // namespace fp8rl::quant
