#pragma once
// Element-wise copies and sums between strided views of the same shape, any rank: how shards,
// message buffers and the per-block results of the distributed kernels move into place.

#include "llm_utils/tensor.hpp"

namespace llm_utils::dist::detail {

/// dst = src (shapes equal; any strides; must not overlap).
void copy_into(ConstTensorView src, TensorView dst);
/// dst += src (shapes equal; any strides; must not overlap).
void add_into(ConstTensorView src, TensorView dst);

/// `t` with size-1 dimensions (stride 0) put in front until it has rank `rank`: how the
/// distributed kernels read every rank of q, out (as (B, H, rows, cols)) or lse (as (B, H, rows))
/// with one loop nest.
template <typename T>
BasicTensorView<T> with_leading_ones(BasicTensorView<T> t, int64_t rank) {
  Shape shape = t.shape(), strides = t.strides();
  while (static_cast<int64_t>(shape.size()) < rank) {
    shape.insert(shape.begin(), 1);
    strides.insert(strides.begin(), 0);
  }
  return BasicTensorView<T>(t.data(), shape, strides);
}

}  // namespace llm_utils::dist::detail
