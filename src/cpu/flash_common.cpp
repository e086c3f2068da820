#include "cpu/flash_common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "cpu/microkernels.hpp"
#include "llm_utils/threads.hpp"

namespace llm_utils::cpu::flash {

BlockedTranspose BlockedTranspose::of(const Strided<const float>& src, int64_t batch, int64_t heads,
                                      int64_t rows, int64_t cols) {
  BlockedTranspose t(batch * heads, rows, cols);
  const int64_t per_matrix = t.blocks_;
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
  for (int64_t task = 0; task < batch * heads * per_matrix; ++task) {
    const int64_t i = task / per_matrix, r0 = (task % per_matrix) * kBlock;
    const float* rows_r0 = src.row(i / heads, i % heads, r0);
    microkernels().transpose(rows_r0, std::min(kBlock, rows - r0), cols, src.row_stride,
                             t.block(i, r0), ld);
  }
  return t;
}

void TileMasker::apply(float* s, int64_t ld, int64_t g, int64_t i0, int64_t queries, int64_t j0,
                       int64_t keys, bool transposed, float* softcap_grad) const {
  const int64_t rows = transposed ? keys : queries;
  const int64_t cols = transposed ? queries : keys;
  const float slope = p.alibi_slopes != nullptr ? p.alibi_slopes[g % p.heads] : 0.0f;
  const bool hides = hides_some(i0, queries, j0, keys);
  // Each query's position and range once, not once per element (queries <= kQueryBlock).
  detail::AttentionShape::KeyRange ranges[kQueryBlock];
  float positions[kQueryBlock];  // ALiBi: each query's key position as a float
  // Positions and keys below 2^23 make every distance exact in float (below 2^24); beyond,
  // the distances are taken in int64.
  constexpr int64_t kExactInFloat = int64_t{1} << 23;
  bool float_distances = j0 + keys <= kExactInFloat;
  if (hides || slope != 0.0f) {
    for (int64_t c = 0; c < queries; ++c) {
      ranges[c] = p.key_range(i0 + c);
      positions[c] = static_cast<float>(ranges[c].pos);
      float_distances &= ranges[c].pos >= -kExactInFloat && ranges[c].pos <= kExactInFloat;
    }
  }
  const auto query_of = [&](int64_t r, int64_t c) { return transposed ? c : r; };  // - i0
  const auto key_of = [&](int64_t r, int64_t c) { return j0 + (transposed ? r : c); };
  if (prescale()) {
    const float* mask = p.mask != nullptr ? p.mask_of(g) : nullptr;
    const Microkernels& mk = microkernels();
    for (int64_t r = 0; r < rows; ++r) {
      float* row = s + r * ld;
      // Scaled (and capped: the table's vectorised tanh), then ALiBi and the mask.
      if (p.softcap != 0.0f) {
        mk.softcap(row, cols, p.scale, p.softcap,
                   softcap_grad != nullptr ? softcap_grad + r * ld : nullptr);
      } else {
        for (int64_t c = 0; c < cols; ++c) row[c] *= p.scale;
      }
      if (slope != 0.0f && !float_distances) {
        for (int64_t c = 0; c < cols; ++c) {
          row[c] -= slope * static_cast<float>(std::abs(ranges[query_of(r, c)].pos - key_of(r, c)));
        }
      } else if (slope != 0.0f) {
        // -slope * |pos_i - j|, the distance exact in float, in loops the compiler vectorises:
        // queries along the row, or keys.
        if (transposed) {
          const float key = static_cast<float>(j0 + r);
          for (int64_t c = 0; c < cols; ++c) row[c] -= slope * std::fabs(positions[c] - key);
        } else {
          const float pos = positions[r] - static_cast<float>(j0);
          for (int64_t c = 0; c < cols; ++c) {
            row[c] -= slope * std::fabs(pos - static_cast<float>(c));
          }
        }
      }
      if (mask == nullptr) continue;
      for (int64_t c = 0; c < cols; ++c) {
        row[c] += mask[p.mask_index(i0 + query_of(r, c), key_of(r, c))];
      }
    }
  }
  if (!hides) return;
  // Key j is hidden from a query when j < range.begin or j >= range.end.
  if (!transposed) {
    // A row is one query: its hidden keys are two runs of columns, [0, b) and [e, cols) (all
    // of them when e <= b).
    for (int64_t r = 0; r < rows; ++r) {
      float* row = s + r * ld;
      const int64_t b = std::clamp<int64_t>(ranges[r].begin - j0, 0, cols);
      const int64_t e = std::clamp<int64_t>(ranges[r].end - j0, 0, cols);
      std::fill(row, row + b, kMinusInf);
      std::fill(row + e, row + cols, kMinusInf);
    }
    return;
  }
  // A row is one key against the block's queries: a test per element, over arrays the compiler
  // vectorises.
  int64_t begins[kQueryBlock], ends[kQueryBlock];
  for (int64_t c = 0; c < cols; ++c) {
    begins[c] = ranges[c].begin;
    ends[c] = ranges[c].end;
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    const int64_t j = j0 + r;
    for (int64_t c = 0; c < cols; ++c) {
      row[c] = j < begins[c] || j >= ends[c] ? kMinusInf : row[c];
    }
  }
}

}  // namespace llm_utils::cpu::flash
