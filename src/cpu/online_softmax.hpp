#pragma once
// The online-softmax step of the fused forward (Microkernels::online_softmax), row by row over
// an ISA's own row primitives: the portable and AVX2 tables' version (the AVX-512 table has a
// fused one). Included by those microkernel files only, so it compiles with their flags.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace llm_utils::cpu {

template <typename RowMax, typename ExpCenteredSum>
void online_softmax_by_rows(RowMax row_max, ExpCenteredSum exp_centered_sum, float* s, int64_t ld,
                            int64_t rows, int64_t cols, float scale, float* m, float* l, float* acc,
                            int64_t ld_acc, int64_t acc_cols) {
  constexpr float kMinusInf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    const float tile_max = row_max(row, cols);
    const float m_new = tile_max > m[r] || std::isnan(tile_max) ? tile_max : m[r];
    if (m_new == kMinusInf) {
      // Every key so far is hidden from this query: nothing to add.
      std::fill(row, row + cols, 0.0f);
      continue;
    }
    // Differences before the scale: exact near the max, however large the scores are.
    const float correction = m[r] == kMinusInf ? 0.0f : std::exp((m[r] - m_new) * scale);
    const float tile_sum = exp_centered_sum(row, cols, scale, m_new, 0.0f);
    l[r] = l[r] * correction + tile_sum;
    if (correction != 1.0f) {
      float* acc_row = acc + r * ld_acc;
      for (int64_t c = 0; c < acc_cols; ++c) acc_row[c] *= correction;
    }
    m[r] = m_new;
  }
}

}  // namespace llm_utils::cpu
