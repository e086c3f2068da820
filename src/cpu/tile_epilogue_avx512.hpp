#pragma once
// The end of an AVX-512 register tile, shared by the float32 GEMM (microkernels_avx512.cpp) and
// the bfloat16 ones (bf16_microkernels_avx512.hpp), whose accumulators are float32 alike. In an
// anonymous namespace: each including unit, with its own target flags, gets its own copy.

#include <immintrin.h>

#include <cstdint>

namespace llm_utils::cpu {
namespace {

// C (MR rows of NV vectors, ldc apart; the last vector of a row under last_mask) = alpha acc,
// or C += alpha acc with `accumulate`. Inlined into the tile so acc stays in registers.
template <int MR, int NV>
__attribute__((always_inline)) inline void store_tile(__m512 (&acc)[MR][NV], float alpha, float* c,
                                                      int64_t ldc, bool accumulate,
                                                      __mmask16 last_mask) {
  constexpr int kLanes = 16;
  // No multiply for alpha = 1 (every tile but the backward's scaled dK and dQ): the same bits,
  // but under flush-to-zero, where x * 1 flushed a subnormal accumulator that is now stored.
  if (alpha != 1.0f) {
    const __m512 alpha_v = _mm512_set1_ps(alpha);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_mul_ps(acc[r][v], alpha_v);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* c_row = c + r * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mask = v == NV - 1 ? last_mask : static_cast<__mmask16>(0xFFFF);
      __m512 result = acc[r][v];
      if (accumulate) {
        result = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, c_row + v * kLanes), result);
      }
      _mm512_mask_storeu_ps(c_row + v * kLanes, mask, result);
    }
  }
}

}  // namespace
}  // namespace llm_utils::cpu
