#pragma once
// bfloat16 test operands, without Google Test (tests/amx/amx_hardware_check.cpp builds with
// nothing but a compiler; kernel_test_util.hpp includes this for the suites).

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "llm_utils/bfloat16.hpp"

namespace llm_utils::testing {

/// n normal bfloat16s of magnitudes 2^-4 .. 2^4, either sign: no product or sum of a few
/// thousand of them is subnormal.
inline std::vector<bfloat16> normal_bf16(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-4, 4), sign(0, 1);
  std::vector<bfloat16> out(static_cast<size_t>(n));
  for (bfloat16& x : out) {
    x = bfloat16((sign(gen) ? -1.0f : 1.0f) * std::ldexp(mantissa(gen), exponent(gen)));
  }
  return out;
}

}  // namespace llm_utils::testing
