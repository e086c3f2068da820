// The bfloat16 operand layouts of flash_operands.hpp, built in parallel over blocks.

#include "cpu/flash_operands.hpp"

#include "llm_utils/threads.hpp"

namespace llm_utils::cpu::flash {
namespace {

// Calls fill(block, source rows, rows in the block) for every kBlock-row block of every matrix
// of src (batch, heads, rows, cols), in parallel.
template <typename Fill>
void for_each_block(const Strided<const bfloat16>& src, int64_t batch, int64_t heads, int64_t rows,
                    BlockedOperand<bfloat16>& dst, Fill fill) {
  constexpr int64_t kBlock = BlockedOperand<bfloat16>::kBlock;
  const int64_t per_matrix = blocks(rows, kBlock);
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
  for (int64_t task = 0; task < batch * heads * per_matrix; ++task) {
    const int64_t i = task / per_matrix, r0 = (task % per_matrix) * kBlock;
    fill(dst.block(i, r0), src.row(i / heads, i % heads, r0), std::min(kBlock, rows - r0));
  }
}

}  // namespace

Operands<bfloat16>::TransposedB Operands<bfloat16>::transposed_b(const Strided<const bfloat16>& src,
                                                                 int64_t batch, int64_t heads,
                                                                 int64_t rows, int64_t cols) {
  constexpr int64_t ld = 2 * BlockedOperand<bfloat16>::kBlock;
  TransposedB out(batch * heads, rows, pair_rows(cols) * ld, ld);
  const int64_t lds = src.row_stride;
  for_each_block(src, batch, heads, rows, out,
                 [&](bfloat16* block, const bfloat16* first_row, int64_t bc) {
                   transpose_to_pairs(first_row, bc, cols, lds, block, ld);
                 });
  return out;
}

Operands<bfloat16>::RowsB Operands<bfloat16>::rows_b(const Strided<const bfloat16>& src,
                                                     int64_t batch, int64_t heads, int64_t rows,
                                                     int64_t cols) {
  constexpr int64_t kBlock = BlockedOperand<bfloat16>::kBlock;
  const int64_t ld = 2 * cols;
  RowsB out(batch * heads, rows, (kBlock / 2) * ld, ld);
  const int64_t lds = src.row_stride;
  for_each_block(src, batch, heads, rows, out,
                 [&](bfloat16* block, const bfloat16* first_row, int64_t bc) {
                   int64_t ldb = 0;
                   rows_b_tile(first_row, bc, cols, lds, block, ldb);
                 });
  return out;
}

Operands<bfloat16>::TransposedA Operands<bfloat16>::transposed_a(const Strided<const bfloat16>& src,
                                                                 int64_t batch, int64_t heads,
                                                                 int64_t rows, int64_t cols) {
  constexpr int64_t ld = BlockedOperand<bfloat16>::kBlock;
  TransposedA out(batch * heads, rows, cols * ld, ld);
  const int64_t lds = src.row_stride;
  for_each_block(src, batch, heads, rows, out,
                 [&](bfloat16* block, const bfloat16* first_row, int64_t bc) {
                   for (int64_t r = 0; r < bc; ++r) {
                     for (int64_t c = 0; c < cols; ++c) block[c * ld + r] = first_row[r * lds + c];
                   }
                 });
  return out;
}

const bfloat16* Operands<bfloat16>::rows_b_tile(const bfloat16* src, int64_t rows, int64_t cols,
                                                int64_t lds, bfloat16* buffer, int64_t& ldb) {
  const Bf16Microkernels& mk = bf16_microkernels();
  ldb = 2 * cols;
  for (int64_t r = 0; r < rows; r += 2) {
    const bfloat16* second = r + 1 < rows ? src + (r + 1) * lds : nullptr;
    mk.interleave(src + r * lds, second, cols, buffer + (r / 2) * ldb);
  }
  return buffer;
}

}  // namespace llm_utils::cpu::flash
