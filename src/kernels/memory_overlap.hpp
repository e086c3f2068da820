#pragma once
// Whether two strided views may share memory: the check that keeps a kernel's outputs off its
// inputs and off each other. Exact for the layouts that matter (disjoint buffers; heads or
// columns of one packed buffer, side by side), conservative otherwise.

#include <cstdint>

#include "llm_utils/tensor.hpp"

namespace llm_utils::detail {

/// The bytes a view of any element type may touch: its data, shape and strides (in elements)
/// and the element size.
struct MemoryExtent {
  const void* data;
  Shape shape;
  Shape strides;
  uint64_t element_size;

  template <typename T>
  MemoryExtent(const BasicTensorView<T>& view)  // NOLINT(google-explicit-constructor)
      : data(view.data()), shape(view.shape()), strides(view.strides()), element_size(sizeof(T)) {}
  MemoryExtent(const Tensor& t)  // NOLINT(google-explicit-constructor)
      : MemoryExtent(t.view()) {}
};

/// False when `a` and `b` provably touch no common byte; true when they may. Empty views
/// overlap nothing.
///
/// Two tests, each O(rank): the byte spans [first, last] do not meet; or, with each view
/// written as runs of L contiguous bytes at multiples of a period R (its dimensions sorted by
/// stride, the innermost contiguous ones merged into the run, R the gcd of the other strides),
/// the two runs fall in disjoint intervals modulo the gcd of the two periods. The second test
/// proves, for instance, that the q, k and v heads of a packed (B, N, (H + 2G) * hd) projection
/// are disjoint although their spans interleave.
bool may_overlap(const MemoryExtent& a, const MemoryExtent& b);

}  // namespace llm_utils::detail
