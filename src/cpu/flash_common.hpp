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

/// dst (B, cols, rows) = transpose of each src (B, rows, cols).
void transpose_batched(const float* src, int64_t batch, int64_t rows, int64_t cols, float* dst);

/// Adds the mask and/or hides keys in a tile of scores S (rows x cols, leading dimension ld)
/// whose top-left element is query i0, key j0. With an additive mask the tile is first
/// multiplied by `scale` (the caller then uses scale 1 in the exponent). `transposed` says the
/// tile is stored key-major: element (r, c) is key j0 + r, query i0 + c.
struct TileMasker {
  const FlashProblem& p;
  /// True when scores must be scaled before the exponent (an additive mask is present).
  bool prescale() const { return p.mask != nullptr; }
  /// Whether a tile of queries [i0, i0 + rows) x keys [j0, j0 + cols) has any hidden key.
  bool crosses_diagonal(int64_t i0, int64_t j0, int64_t cols) const {
    return p.causal && j0 + cols - 1 > i0;
  }
  void apply(float* s, int64_t ld, int64_t b, int64_t i0, int64_t queries, int64_t j0, int64_t keys,
             bool transposed) const;
};

/// The last key (exclusive) that any query in [i0, i0 + rows) may see.
inline int64_t key_end(const FlashProblem& p, int64_t i0, int64_t rows) {
  return p.causal ? std::min(p.m, i0 + rows) : p.m;
}

}  // namespace llm_utils::cpu::flash
