#pragma once
// The public kernels' argument checks, shared by the float32 (attention.cpp) and bfloat16
// (attention_bf16.cpp) entry points: ranks and shapes, contiguous rows, the mask's broadcast,
// overlaps between outputs and inputs; and the views turned into the kernels' Strided arrays.

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "detail/attention_problem.hpp"
#include "kernels/memory_overlap.hpp"
#include "llm_utils/attention.hpp"

namespace llm_utils::detail {

/// "[2, 3] (strides [3, 1])".
std::string describe(const MemoryExtent& t);

// How the rank of q lays out the (batch, heads) of the kernels:
//   rank 2: (N, X), one head;  rank 3: (B, N, X), B heads of one batch element (k/v may have
//   a divisor of B heads);  rank 4: (B, H, N, X), k/v (B, G, M, X) with G dividing H.
struct Rank {
  int64_t value;
  // The (batch, heads) a (.., rows, cols) tensor of this rank holds.
  int64_t batch_of(const Shape& s) const { return value == 4 ? s[0] : 1; }
  int64_t heads_of(const Shape& s) const { return value == 4 ? s[1] : (value == 3 ? s[0] : 1); }
};

// t's leading (batch, heads) strides as the rank lays them out, with the given row stride.
template <typename T>
Strided<T> with_heads(const BasicTensorView<T>& t, int64_t row_stride, Rank rank) {
  Strided<T> out{t.data(), 0, 0, row_stride};
  if (rank.value == 4) {
    out.batch_stride = t.stride(0);
    out.head_stride = t.stride(1);
  } else if (rank.value == 3) {
    out.head_stride = t.stride(0);
  }
  return out;
}

/// Throws unless t has the rank and contiguous rows (stride 1 along the last dimension, when it
/// has more than one element).
void expect_matrices(const char* fn, const char* name, const MemoryExtent& t, Rank rank);

// A (.., rows, cols) matrix set of the given rank as the kernels' Strided, its rows required to
// be contiguous.
template <typename T>
Strided<T> matrices(const char* fn, const char* name, const BasicTensorView<T>& t, Rank rank) {
  expect_matrices(fn, name, t, rank);
  return with_heads(t, t.stride(-2), rank);
}

// lse-like (.., N) arrays, one rank below q: any strides.
template <typename T>
Strided<T> row_values(const BasicTensorView<T>& t, Rank rank) {
  return with_heads(t, t.stride(-1), rank);
}

void expect_shape(const char* fn, const char* name, const Shape& actual, const Shape& expected);

/// The sizes, scale and causal offset of q (.., N, d), k (.., M, d), v (.., M, dv) after every
/// check, with the options' mask set (its broadcast checked).
AttentionShape checked_shape(const char* fn, const MemoryExtent& q, const MemoryExtent& k,
                             const MemoryExtent& v, const AttentionOptions& options);

/// Throws unless the scale divisor is positive and finite.
void check_divisor(const char* fn, float divisor);

/// Checks a sink-gradient output (given) against the problem: sinks present, shape (H),
/// contiguous.
void check_dsinks(const char* fn, const MemoryExtent& dsinks, const AttentionShape& p);

/// Checks the options' window, softcap, ALiBi slopes and sinks (one per query head p.heads)
/// and sets them in p.
void set_variants(const char* fn, const AttentionOptions& options, AttentionShape& p);

template <typename T>
BasicAttentionProblem<T> make_problem(const char* fn, BasicTensorView<const T> q,
                                      BasicTensorView<const T> k, BasicTensorView<const T> v,
                                      const AttentionOptions& options) {
  BasicAttentionProblem<T> p;
  static_cast<AttentionShape&>(p) = checked_shape(fn, q, k, v, options);
  const Rank rank{q.dim()};
  p.q = matrices(fn, "q", q, rank);
  p.k = matrices(fn, "k", k, rank);
  p.v = matrices(fn, "v", v, rank);
  return p;
}

// The shape of an output with q's leading dimensions and `tail` after them.
Shape with_leading_of(const Shape& q_shape, std::vector<int64_t> tail);

using NamedExtents = std::vector<std::pair<const char*, MemoryExtent>>;

// Throws if any output shares memory with an input or with another output.
void check_no_overlap(const char* fn, const NamedExtents& inputs, const NamedExtents& outputs);

// The inputs and, when given, the options' mask, ALiBi slopes and sinks.
NamedExtents with_mask(NamedExtents inputs, const AttentionOptions& options);

// Throws unless t is (T, heads, dim) with contiguous rows.
void expect_packed(const char* fn, const char* name, const MemoryExtent& t);

// A packed (T, heads, cols) tensor with contiguous rows (varlen and paged queries) as the
// kernels' (1, heads, T, cols).
template <typename T>
Strided<T> packed(const char* fn, const char* name, const BasicTensorView<T>& t) {
  expect_packed(fn, name, t);
  return {t.data(), 0, t.stride(1), t.stride(0)};
}

// Throws unless cu (cu_seqlens) runs from 0 to `total` without decreasing.
void check_offsets(const char* fn, const char* name, std::span<const int64_t> cu, int64_t total);

}  // namespace llm_utils::detail
