// The AVX512_BF16 peak loop (compiled with -mavx512f -mavx512bf16; called only when the CPU has
// it): 24 independent vdpbf16ps chains, each instruction 16 lanes x 2 multiply-adds.

#include <immintrin.h>

#include "fma_peak.hpp"

namespace llm_utils::bench {

double dpbf16_loop_avx512(long long iterations, float* sink) {
  constexpr int kChains = 24;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + 0.01f * static_cast<float>(i));
  // Pairs of 2^-12: each step adds 2^-23 to a lane, 2^-23 * 2e7 ~ 2.4 over a run: no overflow,
  // no subnormals (which vdpbf16ps would flush).
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0x1p-12f), _mm512_set1_ps(0x1p-12f));
  const __m512bh b = a;
  for (long long it = 0; it < iterations; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 total = acc[0];
  for (int i = 1; i < kChains; ++i) total = _mm512_add_ps(total, acc[i]);
  *sink = _mm512_reduce_add_ps(total);
  return 4.0 * 16.0 * kChains * static_cast<double>(iterations);
}

}  // namespace llm_utils::bench
