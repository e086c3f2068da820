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
  // Rows in groups, so that the corrections of a group are one vector exp call rather than a
  // scalar exp per row.
  constexpr int64_t kGroup = 64;
  float m_new[kGroup];       // each row's new running max
  float correction[kGroup];  // exp((m - m') * scale), 0 while m is -inf
  for (int64_t r0 = 0; r0 < rows; r0 += kGroup) {
    const int64_t n = std::min(kGroup, rows - r0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = r0 + i;
      const float tile_max = row_max(s + r * ld, cols);
      m_new[i] = tile_max > m[r] || std::isnan(tile_max) ? tile_max : m[r];
      // Differences before the scale: exact near the max, however large the scores are. (A row
      // with m = -inf gets 0 below; one with m' = -inf is skipped.)
      correction[i] = m[r] - m_new[i];
    }
    exp_centered_sum(correction, n, scale, 0.0f, 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = r0 + i;
      float* row = s + r * ld;
      if (m_new[i] == kMinusInf) {
        // Every key so far is hidden from this query: nothing to add.
        std::fill(row, row + cols, 0.0f);
        continue;
      }
      const float tile_sum = exp_centered_sum(row, cols, scale, m_new[i], 0.0f);
      if (m[r] == kMinusInf) correction[i] = 0.0f;  // nothing summed yet, whatever the scale
      l[r] = l[r] * correction[i] + tile_sum;
      if (correction[i] != 1.0f) {
        float* acc_row = acc + r * ld_acc;
        for (int64_t c = 0; c < acc_cols; ++c) acc_row[c] *= correction[i];
      }
      m[r] = m_new[i];
    }
  }
}

}  // namespace llm_utils::cpu
