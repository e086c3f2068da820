#pragma once
// The masks MultiHeadAttention::forward takes (an attention mask broadcast to (B, H, N, M) and a
// key-padding mask (B, M)), checked and merged into the one additive mask the kernels read.

#include <cstdint>
#include <string>

#include "detail/attention_problem.hpp"
#include "llm_utils/nn/attention_mask.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils::detail {

/// An additive mask broadcast over (B, H, N, M) for the kernels: contiguous `values` of shape
/// (Bm, Hm, Nm, Mm), each dimension full or 1, read through `strides` (0 where broadcast).
struct BroadcastMask {
  Tensor values;
  int64_t strides[4] = {0, 0, 0, 0};  // B, H, N, M
  bool present = false;
};

/// The sizes a mask must broadcast to: batch B, heads H, queries N, keys M.
struct MaskExtent {
  int64_t batch, heads, queries, keys;
};

/// attn_mask (rank 2 to 4, aligned right to (B, H, N, M), each dimension full or 1) and
/// key_padding (M) or (B, M), either or both empty, as one mask; both given are added into a new
/// tensor. Throws ArgumentError naming `where`, the argument and both shapes.
BroadcastMask merge_masks(const std::string& where, const AttentionMask& attn_mask,
                          const AttentionMask& key_padding, const MaskExtent& extent);

/// Points the problem (B batch elements of p.heads heads) at the mask; nothing when it is absent.
void apply_mask(const BroadcastMask& mask, AttentionShape& p);

}  // namespace llm_utils::detail
