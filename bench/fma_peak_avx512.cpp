// The AVX-512 peak loop (compiled with -mavx512f; called only when the CPU has it). 24
// accumulators of the 32 zmm registers, as many independent chains as any current core needs.

#include <immintrin.h>

#include "fma_peak.hpp"

namespace llm_utils::bench {

double fma_loop_avx512(long long iterations, float* sink) {
  constexpr int kChains = 24;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + 0.01f * static_cast<float>(i));
  // acc = acc * b + c converges to c / (1 - b) = 1: no overflow, no denormals.
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.001f);
  for (long long it = 0; it < iterations; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
  }
  __m512 total = acc[0];
  for (int i = 1; i < kChains; ++i) total = _mm512_add_ps(total, acc[i]);
  *sink = _mm512_reduce_add_ps(total);
  return 2.0 * 16.0 * kChains * static_cast<double>(iterations);
}

}  // namespace llm_utils::bench
