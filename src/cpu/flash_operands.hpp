#pragma once
// The operands of the fused kernels' tile GEMMs, per element type, so that one kernel template
// serves float32 and bfloat16 (flash_forward.cpp, flash_backward.cpp).
//
// Every tile product is C (float32) += A B with A row-major and B as the element type's GEMM
// reads it: float32 B is row-major; bfloat16 B is in pairs (bf16_microkernels.hpp). The
// kernels ask Operands<T> for:
//
//   transposed_b(X)  X^T as B, block by 64 rows of X:  float32 the blocked transpose,
//                    bfloat16 its pairs layout;
//   rows_b(X)        X itself as B, 64 rows at a time:  float32 X's own rows (no copy),
//                    bfloat16 each block's row pairs interleaved;
//   transposed_a(X)  X^T as A, block by 64 rows of X:  the blocked transpose for both;
//   a_from_tile      a float32 tile as A:  float32 itself, bfloat16 rounded into a buffer;
//   softmax_step     the online-softmax step, its probabilities as A (as a_from_tile);
//   b_from_tile      a float32 tile as B:  float32 itself, bfloat16 rounded into pairs;
//
// and store_row puts float32 results into either type (bfloat16: rounded).
//
// So with bfloat16 every GEMM input is rounded to bfloat16 once (P and dS as FlashAttention
// rounds them), every product accumulates in float32, and the softmax is float32 throughout.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/bf16_microkernels.hpp"
#include "cpu/flash_common.hpp"
#include "cpu/microkernels.hpp"

namespace llm_utils::cpu::flash {

/// A batch of (rows, cols) matrices as blocks of kBlock rows, each block `block_size` elements
/// of one layout with leading dimension `ld`; block r0 / kBlock of matrix b at block(b, r0).
/// Zero-initialised (padding included).
template <typename T>
class BlockedOperand {
 public:
  static constexpr int64_t kBlock = BlockedTranspose::kBlock;

  BlockedOperand() = default;
  BlockedOperand(int64_t batch, int64_t rows, int64_t block_size, int64_t ld)
      : ld(ld),
        blocks_(flash::blocks(rows, kBlock)),
        block_size_(block_size),
        data_(static_cast<size_t>(batch * blocks_ * block_size)) {}

  const T* block(int64_t b, int64_t r0) const { return data_.data() + offset(b, r0); }
  T* block(int64_t b, int64_t r0) { return data_.data() + offset(b, r0); }

  int64_t ld = 0;

 private:
  size_t offset(int64_t b, int64_t r0) const {
    return static_cast<size_t>((b * blocks_ + r0 / kBlock) * block_size_);
  }
  int64_t blocks_ = 0;
  int64_t block_size_ = 0;
  WorkspaceVector<T> data_;  // (batch, blocks, block_size)
};

/// The rows of a strided (batch, heads, rows, cols) array, used as B in place: block(b, r0) is
/// row r0 of matrix b (b = batch index * heads + head), ld the row stride.
template <typename T>
struct InPlaceRows {
  Strided<const T> src;
  int64_t heads = 1;
  int64_t ld = 0;
  const T* block(int64_t b, int64_t r0) const { return src.row(b / heads, b % heads, r0); }
};

/// float32 results stored as float32 (a copy) or bfloat16 (rounded).
inline void store_row(const float* src, int64_t n, float* dst) {
  std::copy(src, src + n, dst);
}
inline void store_row(const float* src, int64_t n, bfloat16* dst) {
  bf16_microkernels().round(src, n, dst);
}
/// One float32 value as the element type.
template <typename T>
T element(float x) {
  return T(x);
}

template <typename T>
struct Operands;

template <>
struct Operands<float> {
  using TransposedB = BlockedTranspose;
  using RowsB = InPlaceRows<float>;
  using TransposedA = BlockedTranspose;

  static void gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                   const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
    microkernels().gemm(m, n, k, alpha, a, lda, b, ldb, c, ldc, accumulate);
  }
  static TransposedB transposed_b(const Strided<const float>& src, int64_t batch, int64_t heads,
                                  int64_t rows, int64_t cols) {
    return BlockedTranspose::of(src, batch, heads, rows, cols);
  }
  static RowsB rows_b(const Strided<const float>& src, int64_t /*batch*/, int64_t heads,
                      int64_t /*rows*/, int64_t /*cols*/) {
    return {src, heads, src.row_stride};
  }
  static TransposedA transposed_a(const Strided<const float>& src, int64_t batch, int64_t heads,
                                  int64_t rows, int64_t cols) {
    return BlockedTranspose::of(src, batch, heads, rows, cols);
  }
  /// B for one tile: `rows` rows of src (cols wide, stride lds) transposed into dst (cols x 64).
  /// Returns dst's leading dimension.
  static int64_t transposed_b_tile(const float* src, int64_t rows, int64_t cols, int64_t lds,
                                   float* dst) {
    microkernels().transpose(src, rows, cols, lds, dst, kKeyBlock);
    return kKeyBlock;
  }
  /// B for one tile of rows of src: src itself.
  static const float* rows_b_tile(const float* src, int64_t /*rows*/, int64_t /*cols*/, int64_t lds,
                                  float* /*buffer*/, int64_t& ldb) {
    ldb = lds;
    return src;
  }
  /// The online-softmax step on a tile of scores (Microkernels::online_softmax); returns the
  /// probabilities as A (leading dimension ld): the tile itself.
  static const float* softmax_step(float* tile, int64_t ld, int64_t rows, int64_t cols, float scale,
                                   float* m, float* l, float* acc, int64_t ld_acc, int64_t acc_cols,
                                   float* /*buffer*/) {
    microkernels().online_softmax(tile, ld, rows, cols, scale, m, l, acc, ld_acc, acc_cols);
    return tile;
  }
  /// The backward's P^T from a tile of S^T (rows x cols, leading dimension ld), row by row
  /// (Microkernels::exp_centered_each); as A: the tile itself.
  static const float* probabilities_t(float* tile, int64_t ld, int64_t rows, int64_t cols,
                                      float scale, const float* centers, const float* offsets,
                                      float* /*buffer*/) {
    const Microkernels& mk = microkernels();
    for (int64_t r = 0; r < rows; ++r)
      mk.exp_centered_each(tile + r * ld, cols, scale, centers, offsets);
    return tile;
  }
  /// dS^T = P^T (dP^T - D) (Microkernels::softmax_grad) in place in dpt; as A and as B
  /// (leading dimension ldb): dpt itself.
  static void dscores_t(const float* pt, float* dpt, int64_t ld, int64_t rows, int64_t cols,
                        const float* dsum, float* /*a_buffer*/, float* /*b_buffer*/,
                        const float*& a, const float*& b, int64_t& ldb) {
    const Microkernels& mk = microkernels();
    for (int64_t r = 0; r < rows; ++r) mk.softmax_grad(pt + r * ld, dpt + r * ld, dsum, cols);
    a = b = dpt;
    ldb = ld;
  }
  /// A tile (rows x cols, leading dimension ld) as A: itself, leading dimension ld.
  static const float* a_from_tile(const float* tile, int64_t /*ld*/, int64_t /*rows*/,
                                  int64_t /*cols*/, float* /*buffer*/) {
    return tile;
  }
  /// A tile as B: itself; ldb = ld.
  static const float* b_from_tile(const float* tile, int64_t ld, int64_t /*rows*/, int64_t /*cols*/,
                                  float* /*buffer*/, int64_t& ldb) {
    ldb = ld;
    return tile;
  }
  /// sum_p a[p] b[p], rounded as one element of gemm (microkernels.hpp, dot).
  static float dot(const float* a, const float* b, int64_t n) {
    return microkernels().dot(a, b, n);
  }
  /// Scratch sizes (elements) for the buffers a_from_tile and b_from_tile fill: none.
  static constexpr int64_t kTileBuffer = 0;
  /// Whether rows_b copies (else it reads the source in place).
  static constexpr bool kRowsBCopies = false;
};

template <>
struct Operands<bfloat16> {
  using TransposedB = BlockedOperand<bfloat16>;
  using RowsB = BlockedOperand<bfloat16>;
  using TransposedA = BlockedOperand<bfloat16>;

  static void gemm(int64_t m, int64_t n, int64_t k, float alpha, const bfloat16* a, int64_t lda,
                   const bfloat16* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
    bf16_microkernels().gemm(m, n, k, alpha, a, lda, b, ldb, c, ldc, accumulate);
  }
  /// Pair rows of a (cols x 64) block: cols rounded up to even, 2 * 64 elements each.
  static int64_t pair_rows(int64_t cols) { return (cols + 1) / 2; }
  static TransposedB transposed_b(const Strided<const bfloat16>& src, int64_t batch, int64_t heads,
                                  int64_t rows, int64_t cols);
  static RowsB rows_b(const Strided<const bfloat16>& src, int64_t batch, int64_t heads,
                      int64_t rows, int64_t cols);
  static TransposedA transposed_a(const Strided<const bfloat16>& src, int64_t batch, int64_t heads,
                                  int64_t rows, int64_t cols);
  static int64_t transposed_b_tile(const bfloat16* src, int64_t rows, int64_t cols, int64_t lds,
                                   bfloat16* dst) {
    transpose_to_pairs(src, rows, cols, lds, dst, 2 * kKeyBlock);
    return 2 * kKeyBlock;
  }
  /// `rows` rows of src interleaved in pairs into buffer ((rows + 1) / 2 x 2 cols).
  static const bfloat16* rows_b_tile(const bfloat16* src, int64_t rows, int64_t cols, int64_t lds,
                                     bfloat16* buffer, int64_t& ldb);
  /// The step with the probabilities rounded into buffer (leading dimension ld).
  static const bfloat16* softmax_step(float* tile, int64_t ld, int64_t rows, int64_t cols,
                                      float scale, float* m, float* l, float* acc, int64_t ld_acc,
                                      int64_t acc_cols, bfloat16* buffer) {
    bf16_microkernels().online_softmax(tile, ld, rows, cols, scale, m, l, acc, ld_acc, acc_cols,
                                       buffer, ld);
    return buffer;
  }
  /// P^T as above, rounded into buffer (leading dimension ld) in the same pass.
  static const bfloat16* probabilities_t(float* tile, int64_t ld, int64_t rows, int64_t cols,
                                         float scale, const float* centers, const float* offsets,
                                         bfloat16* buffer) {
    const Bf16Microkernels& mk = bf16_microkernels();
    for (int64_t r = 0; r < rows; ++r) {
      mk.exp_centered_each(tile + r * ld, cols, scale, centers, offsets, buffer + r * ld);
    }
    return buffer;
  }
  /// dS^T rounded, two rows a pass: as A into a_buffer (leading dimension ld), as B in pairs
  /// into b_buffer (ldb = 2 ld).
  static void dscores_t(const float* pt, float* dpt, int64_t ld, int64_t rows, int64_t cols,
                        const float* dsum, bfloat16* a_buffer, bfloat16* b_buffer,
                        const bfloat16*& a, const bfloat16*& b, int64_t& ldb) {
    const Bf16Microkernels& mk = bf16_microkernels();
    ldb = 2 * ld;
    for (int64_t r = 0; r < rows; r += 2) {
      const bool second = r + 1 < rows;
      mk.softmax_grad_pairs(pt + r * ld, second ? pt + (r + 1) * ld : nullptr, dpt + r * ld,
                            second ? dpt + (r + 1) * ld : nullptr, dsum, cols, a_buffer + r * ld,
                            second ? a_buffer + (r + 1) * ld : nullptr, b_buffer + (r / 2) * ldb);
    }
    a = a_buffer;
    b = b_buffer;
  }
  static const bfloat16* a_from_tile(const float* tile, int64_t ld, int64_t rows, int64_t cols,
                                     bfloat16* buffer) {
    const Bf16Microkernels& mk = bf16_microkernels();
    for (int64_t r = 0; r < rows; ++r) mk.round(tile + r * ld, cols, buffer + r * ld);
    return buffer;
  }
  static const bfloat16* b_from_tile(const float* tile, int64_t ld, int64_t rows, int64_t cols,
                                     bfloat16* buffer, int64_t& ldb) {
    const Bf16Microkernels& mk = bf16_microkernels();
    ldb = 2 * ld;
    for (int64_t r = 0; r < rows; r += 2) {
      const float* second = r + 1 < rows ? tile + (r + 1) * ld : nullptr;
      mk.round_pairs(tile + r * ld, second, cols, buffer + (r / 2) * ldb);
    }
    return buffer;
  }
  /// sum_p a[p] b[p] in gemm's order: b, contiguous, is the pairs layout of a column.
  static float dot(const bfloat16* a, const bfloat16* b, int64_t n) {
    float acc = 0.0f;
    const int64_t even = n - n % 2;
    if (even > 0) bf16_microkernels().gemm(1, 1, even, 1.0f, a, even, b, 2, &acc, 1, false);
    // A last half pair: its (zero) second product leaves acc as it is.
    if (n % 2 == 1) acc += static_cast<float>(a[n - 1]) * static_cast<float>(b[n - 1]);
    return acc;
  }
  /// Elements of the buffers a_from_tile and b_from_tile fill for a 64 x 64 tile.
  static constexpr int64_t kTileBuffer = kQueryBlock * kKeyBlock;
  static constexpr bool kRowsBCopies = true;
};

}  // namespace llm_utils::cpu::flash
