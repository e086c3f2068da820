#pragma once
// Pieces the fused forward, backward and probability kernels share: block sizes, transposed
// packing, and writing the causal / additive mask into a tile of scores.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/flash_attention.hpp"
#include "cpu/workspace.hpp"

namespace llm_utils::cpu::flash {

using detail::Strided;

// Query rows per block and keys per block. 64 x 64 float tiles (16 KiB) keep the working set
// of one block (Q, K^T, V, S and the output accumulator, ~80 KiB at head dim 64) in L2.
constexpr int64_t kQueryBlock = 64;
constexpr int64_t kKeyBlock = 64;

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

inline int64_t blocks(int64_t size, int64_t block) {
  return (size + block - 1) / block;
}

/// A batch of (rows, cols) matrices held transposed, one block of kBlock rows at a time: block
/// r0 / kBlock of matrix b is the (cols, kBlock) transpose of rows [r0, r0 + kBlock), leading
/// dimension kBlock, the blocks one after another. A tile's rows are then 256 bytes apart
/// rather than 4 * rows: with a plain (cols, rows) transpose at rows = 4096 every row of a
/// tile falls in the same L1 set and the tile GEMMs miss L1 on almost every load.
/// Columns of the last block past `rows` hold zeros.
class BlockedTranspose {
 public:
  static constexpr int64_t kBlock = 64;
  static constexpr int64_t ld = kBlock;  // leading dimension of every block

  BlockedTranspose() = default;
  /// Zeros, to accumulate into.
  BlockedTranspose(int64_t batch, int64_t rows, int64_t cols)
      : blocks_(flash::blocks(rows, kBlock)),
        cols_(cols),
        data_(static_cast<size_t>(batch * blocks_ * cols * kBlock), 0.0f) {}
  /// The transpose of each (rows, cols) matrix of src (batch, heads, rows, cols), matrix
  /// b * heads + h of the result. Parallel over blocks, so one matrix uses every thread.
  static BlockedTranspose of(const Strided<const float>& src, int64_t batch, int64_t heads,
                             int64_t rows, int64_t cols);

  /// (cols, kBlock) for rows [r0, r0 + kBlock) of matrix b; r0 a multiple of kBlock.
  const float* block(int64_t b, int64_t r0) const { return data_.data() + offset(b, r0); }
  float* block(int64_t b, int64_t r0) { return data_.data() + offset(b, r0); }
  /// Sets every element to zero.
  void zero() { std::fill(data_.begin(), data_.end(), 0.0f); }
  /// Element (c, r) of matrix b's transpose: row r, column c of the original.
  float at(int64_t b, int64_t c, int64_t r) const {
    return block(b, r - r % kBlock)[c * ld + r % kBlock];
  }

 private:
  size_t offset(int64_t b, int64_t r0) const {
    return static_cast<size_t>((b * blocks_ + r0 / kBlock) * cols_ * kBlock);
  }
  int64_t blocks_ = 0;
  int64_t cols_ = 0;
  WorkspaceVector<float> data_;  // (batch, blocks, cols, kBlock)
};
static_assert(kQueryBlock == BlockedTranspose::kBlock && kKeyBlock == BlockedTranspose::kBlock,
              "the kernels' tiles are the blocked transposes' blocks");

/// Turns a tile of raw scores Q K^T (rows x cols, leading dimension ld) whose top-left element
/// is query i0, key j0 into the scores the softmax takes (attention_problem.hpp): when
/// modifies_scores(), scaled, capped, biased and masked (the caller then uses scale 1 in the
/// exponent); keys outside each query's range set to -inf. `transposed` says the tile is stored
/// key-major: element (r, c) is key j0 + r, query i0 + c.
struct TileMasker {
  const detail::AttentionShape& p;
  /// True when scores must be scaled before the exponent.
  bool prescale() const { return p.modifies_scores(); }
  /// Whether some query of [i0, i0 + queries) has a key of [j0, j0 + keys) outside its range
  /// (the ranges' ends grow with the query).
  bool hides_some(int64_t i0, int64_t queries, int64_t j0, int64_t keys) const {
    return p.limits_keys() &&
           (p.key_range(i0 + queries - 1).begin > j0 || p.key_range(i0).end < j0 + keys);
  }
  /// With `softcap_grad` (the tile's layout) and a softcap, also writes there the derivative of
  /// the capped score by the scaled one, 1 - tanh^2, for the backward.
  void apply(float* s, int64_t ld, int64_t g, int64_t i0, int64_t queries, int64_t j0, int64_t keys,
             bool transposed, float* softcap_grad = nullptr) const;
};

/// The keys [begin, end) that some query of [i0, i0 + rows) may see; begin rounded down to a
/// key block.
struct KeySpan {
  int64_t begin, end;
};
inline KeySpan key_span(const detail::AttentionShape& p, int64_t i0, int64_t rows) {
  if (!p.limits_keys()) return {0, p.m};
  const int64_t begin = p.key_range(i0).begin, end = p.key_range(i0 + rows - 1).end;
  if (begin >= end) return {0, 0};
  return {begin / kKeyBlock * kKeyBlock, end};
}

}  // namespace llm_utils::cpu::flash
