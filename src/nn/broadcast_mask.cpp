#include "nn/broadcast_mask.hpp"

#include <array>

#include "llm_utils/error.hpp"

namespace llm_utils::detail {
namespace {

using Dims = std::array<int64_t, 4>;  // B, H, N, M

// Contiguous strides of a (B, H, N, M) tensor of these dims, 0 where a dimension is 1.
BroadcastMask with_strides(Tensor values, const Dims& dims) {
  BroadcastMask mask;
  int64_t stride = 1;
  for (int i = 3; i >= 0; --i) {
    mask.strides[i] = dims[static_cast<size_t>(i)] == 1 ? 0 : stride;
    stride *= dims[static_cast<size_t>(i)];
  }
  mask.values = std::move(values).reshape({dims[0], dims[1], dims[2], dims[3]});
  mask.present = true;
  return mask;
}

std::string extent_string(const MaskExtent& e) {
  return shape_to_string({e.batch, e.heads, e.queries, e.keys});
}

Dims attn_mask_dims(const std::string& where, const Shape& shape, const MaskExtent& e) {
  const Dims full = {e.batch, e.heads, e.queries, e.keys};
  Dims dims = {1, 1, 1, 1};
  bool ok = shape.size() >= 2 && shape.size() <= 4;
  for (size_t i = 0; ok && i < shape.size(); ++i) {
    const size_t d = 4 - shape.size() + i;
    dims[d] = shape[i];
    ok = shape[i] == 1 || shape[i] == full[d];
  }
  if (!ok) {
    throw ArgumentError(
        where +
        ": attn_mask must broadcast to (batch, num_heads, queries, keys) = " + extent_string(e) +
        " (rank 2 to 4, each dimension full or 1), got shape " + shape_to_string(shape));
  }
  return dims;
}

Dims key_padding_dims(const std::string& where, const Shape& shape, const MaskExtent& e) {
  const bool ok =
      (shape.size() == 1 && shape[0] == e.keys) ||
      (shape.size() == 2 && (shape[0] == e.batch || shape[0] == 1) && shape[1] == e.keys);
  if (!ok) {
    throw ArgumentError(
        where + ": key_padding_mask must be (batch, keys) = " + shape_to_string({e.batch, e.keys}) +
        " or (keys), got shape " + shape_to_string(shape));
  }
  return {shape.size() == 2 ? shape[0] : 1, 1, 1, e.keys};
}

}  // namespace

BroadcastMask merge_masks(const std::string& where, const AttentionMask& attn_mask,
                          const AttentionMask& key_padding, const MaskExtent& extent) {
  if (attn_mask.empty() && key_padding.empty()) return {};
  if (key_padding.empty()) {
    return with_strides(attn_mask.values(), attn_mask_dims(where, attn_mask.shape(), extent));
  }
  const Dims pad = key_padding_dims(where, key_padding.shape(), extent);
  if (attn_mask.empty()) return with_strides(key_padding.values(), pad);
  const Dims att = attn_mask_dims(where, attn_mask.shape(), extent);
  // Both: sum them into (B or 1, H or 1, N or 1, M), the larger of each dimension.
  Dims dims;
  for (size_t i = 0; i < 4; ++i) dims[i] = std::max(att[i], pad[i]);
  const BroadcastMask a = with_strides(attn_mask.values(), att);
  const BroadcastMask k = with_strides(key_padding.values(), pad);
  Tensor sum({dims[0], dims[1], dims[2], dims[3]});  // (B|1, H|1, N|1, M)
  float* out = sum.data();
  for (int64_t b = 0; b < dims[0]; ++b) {
    for (int64_t h = 0; h < dims[1]; ++h) {
      for (int64_t i = 0; i < dims[2]; ++i) {
        const float* a_row =
            a.values.data() + b * a.strides[0] + h * a.strides[1] + i * a.strides[2];
        const float* k_row = k.values.data() + b * k.strides[0];
        for (int64_t j = 0; j < dims[3]; ++j) *out++ = a_row[j * a.strides[3]] + k_row[j];
      }
    }
  }
  return with_strides(std::move(sum), dims);
}

void apply_mask(const BroadcastMask& mask, AttentionShape& p) {
  if (!mask.present) return;
  p.mask = mask.values.data();
  p.mask_heads = p.heads;
  p.mask_stride_outer = mask.strides[0];
  p.mask_stride_head = mask.strides[1];
  p.mask_stride_row = mask.strides[2];
  p.mask_stride_col = mask.strides[3];
}

}  // namespace llm_utils::detail
