#pragma once
// Element-wise copies and sums between strided views of the same shape, any rank: how shards,
// message buffers and the per-block results of the distributed kernels move into place.

#include "llm_utils/tensor.hpp"

namespace llm_utils::dist::detail {

/// dst = src (shapes equal; any strides; must not overlap).
void copy_into(ConstTensorView src, TensorView dst);
/// dst += src (shapes equal; any strides; must not overlap).
void add_into(ConstTensorView src, TensorView dst);

}  // namespace llm_utils::dist::detail
