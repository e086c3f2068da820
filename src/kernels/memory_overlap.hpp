#pragma once
// Whether two strided views may share memory: the check that keeps a kernel's outputs off its
// inputs and off each other. Exact for the layouts that matter (disjoint buffers; heads or
// columns of one packed buffer, side by side), conservative otherwise.

#include "llm_utils/tensor.hpp"

namespace llm_utils::detail {

/// False when `a` and `b` provably touch no common byte; true when they may. Empty views
/// overlap nothing.
///
/// Two tests, each O(rank): the byte spans [first, last] do not meet; or, with each view
/// written as runs of L contiguous bytes at multiples of a period R (its dimensions sorted by
/// stride, the innermost contiguous ones merged into the run, R the gcd of the other strides),
/// the two runs fall in disjoint intervals modulo the gcd of the two periods. The second test
/// proves, for instance, that the q, k and v heads of a packed (B, N, (H + 2G) * hd) projection
/// are disjoint although their spans interleave.
bool may_overlap(const ConstTensorView& a, const ConstTensorView& b);

}  // namespace llm_utils::detail
