#include "cpu/flash_common.hpp"

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
