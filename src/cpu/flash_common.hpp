#pragma once
// Pieces the fused forward, backward and probability kernels share: block sizes, transposed
// packing, and writing the causal / additive mask into a tile of scores.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/flash_attention.hpp"

namespace llm_utils::cpu::flash {

// Query rows per block and keys per block. 64 x 64 float tiles (16 KiB) keep the working set
// of one block (Q, K^T, V, S and the output accumulator, ~80 KiB at head dim 64) in L2.
constexpr int64_t kQueryBlock = 64;
constexpr int64_t kKeyBlock = 64;

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

inline int64_t blocks(int64_t size, int64_t block) {
  return (size + block - 1) / block;
}

/// dst (B, cols, rows) = transpose of each src (rows, cols) matrix, the matrices `src_stride`
/// elements apart (rows * cols when contiguous).
void transpose_batched(const float* src, int64_t batch, int64_t rows, int64_t cols, float* dst,
                       int64_t src_stride);
inline void transpose_batched(const float* src, int64_t batch, int64_t rows, int64_t cols,
                              float* dst) {
  transpose_batched(src, batch, rows, cols, dst, rows * cols);
}

/// Adds the mask and/or hides keys in a tile of scores S (rows x cols, leading dimension ld)
/// whose top-left element is query i0, key j0. With an additive mask the tile is first
/// multiplied by `scale` (the caller then uses scale 1 in the exponent). `transposed` says the
/// tile is stored key-major: element (r, c) is key j0 + r, query i0 + c.
struct TileMasker {
  const FlashProblem& p;
  /// True when scores must be scaled before the exponent (an additive mask is present).
  bool prescale() const { return p.mask != nullptr; }
  /// Whether a tile of queries [i0, ...) x keys [j0, j0 + cols) has any key hidden by the
  /// causal mask (the first query sees the fewest keys).
  bool crosses_diagonal(int64_t i0, int64_t j0, int64_t cols) const {
    return p.causal && j0 + cols > p.visible_end(i0);
  }
  void apply(float* s, int64_t ld, int64_t b, int64_t i0, int64_t queries, int64_t j0, int64_t keys,
             bool transposed) const;
};

/// The last key (exclusive) that any query in [i0, i0 + rows) may see.
inline int64_t key_end(const FlashProblem& p, int64_t i0, int64_t rows) {
  return p.visible_end(i0 + rows - 1);
}

/// The first query block (a multiple of kQueryBlock) with a query that may see key j0.
inline int64_t first_query_block_seeing(const FlashProblem& p, int64_t j0) {
  if (!p.causal) return 0;
  const int64_t first_query = std::max<int64_t>(0, j0 - p.query_offset);
  return first_query / kQueryBlock * kQueryBlock;
}

}  // namespace llm_utils::cpu::flash
