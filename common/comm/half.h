// bfloat16 and IEEE fp16 <-> float conversions for compressed all-reduce
// wires. Round-to-nearest-even; NaN stays NaN (quieted), Inf stays Inf,
// overflow rounds to Inf, fp16 subnormals are exact. Branch-free so that the
// bulk loops in allreduce_kernels.cc vectorise. Thread-safe: pure functions.
//
// The fp16 routines follow F. Giesen's public-domain "float_to_half_fast3_rtne"
// and "half_to_float" (magic-number renormalisation); they rely only on the
// default round-to-nearest mode, and are exact with FTZ/DAZ too (their float
// temporaries are normal numbers).
#pragma once

#include <bit>
#include <cstdint>

namespace polis::comm {

inline uint16_t FloatToBf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even;
  // a carry into the exponent is the correct rounding (up to Inf).
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

inline float Bf16ToFloat(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

inline uint16_t FloatToHalf(float f) {
  constexpr uint32_t kDenormMagic = ((127 - 15) + (23 - 10) + 1) << 23;  // 0.5f
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  // |f| >= 65536 (or Inf/NaN): Inf, or a quiet NaN.
  const uint32_t inf_nan = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  // |f| < 2^-14: fp16 subnormal or zero. Adding 0.5 lines the 10 mantissa
  // bits up at the bottom of the float; the FPU rounds to nearest even.
  const uint32_t sub =
      std::bit_cast<uint32_t>(std::bit_cast<float>(u) + std::bit_cast<float>(kDenormMagic)) -
      kDenormMagic;
  // Normal: rebias the exponent, round half to even on bit 13.
  const uint32_t mant_odd = (u >> 13) & 1u;
  const uint32_t normal = (u - (112u << 23) + 0xfffu + mant_odd) >> 13;
  const uint32_t o = u >= (143u << 23) ? inf_nan : (u < (113u << 23) ? sub : normal);
  return static_cast<uint16_t>(o | (sign >> 16));
}

inline float HalfToFloat(uint16_t h) {
  constexpr uint32_t kShiftedExp = 0x7c00u << 13;
  constexpr uint32_t kMagic = 113u << 23;
  uint32_t o = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
  const uint32_t exp = o & kShiftedExp;
  o += (127u - 15u) << 23;
  const uint32_t inf_nan = o + ((128u - 16u) << 23);
  // Zero or subnormal: renormalise through a float subtraction (exact).
  const uint32_t sub =
      std::bit_cast<uint32_t>(std::bit_cast<float>(o + (1u << 23)) - std::bit_cast<float>(kMagic));
  o = exp == kShiftedExp ? inf_nan : (exp == 0 ? sub : o);
  o |= (static_cast<uint32_t>(h) & 0x8000u) << 16;
  return std::bit_cast<float>(o);
}

}  // namespace polis::comm
