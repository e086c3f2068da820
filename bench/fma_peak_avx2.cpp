// The AVX2 + FMA peak loop (compiled with -mavx2 -mfma; called only when the CPU has both).
// 12 accumulators: enough independent chains to cover a 4-5 cycle FMA latency at two FMAs per
// cycle, and with the two constants 14 of the 16 ymm registers.

#include <immintrin.h>

#include "fma_peak.hpp"

namespace llm_utils::bench {

double fma_loop_avx2(long long iterations, float* sink) {
  constexpr int kChains = 12;
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(1.0f + 0.01f * static_cast<float>(i));
  // acc = acc * b + c converges to c / (1 - b) = 1: no overflow, no denormals.
  const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
  for (long long it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
  }
  __m256 total = acc[0];
  for (int i = 1; i < kChains; ++i) total = _mm256_add_ps(total, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, total);
  *sink = lanes[0] + lanes[7];
  return 2.0 * 8.0 * kChains * static_cast<double>(iterations);
}

}  // namespace llm_utils::bench
