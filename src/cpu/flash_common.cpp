#include "cpu/flash_common.hpp"

namespace llm_utils::cpu::flash {

void transpose_batched(const float* src, int64_t batch, int64_t rows, int64_t cols, float* dst,
                       int64_t src_stride) {
  constexpr int64_t kTile = 32;  // cache-friendly blocks of the transpose
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
      const float* s = src + b * src_stride;
      float* t = dst + b * rows * cols;
      const int64_t r1 = std::min(rows, r0 + kTile);
      for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
        const int64_t c1 = std::min(cols, c0 + kTile);
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t c = c0; c < c1; ++c) t[c * rows + r] = s[r * cols + c];
        }
      }
    }
  }
}

void TileMasker::apply(float* s, int64_t ld, int64_t b, int64_t i0, int64_t queries, int64_t j0,
                       int64_t keys, bool transposed) const {
  const int64_t rows = transposed ? keys : queries;
  const int64_t cols = transposed ? queries : keys;
  if (p.mask != nullptr) {
    const float* mask = p.mask_of(b);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = s + r * ld;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = i0 + (transposed ? c : r);
        const int64_t j = j0 + (transposed ? r : c);
        row[c] = row[c] * p.scale + mask[p.mask_index(i, j)];
      }
    }
  }
  if (crosses_diagonal(i0, j0, keys)) {
    for (int64_t r = 0; r < rows; ++r) {
      float* row = s + r * ld;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = i0 + (transposed ? c : r);
        const int64_t j = j0 + (transposed ? r : c);
        if (j >= p.visible_end(i)) row[c] = kMinusInf;
      }
    }
  }
}

}  // namespace llm_utils::cpu::flash
