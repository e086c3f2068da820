#pragma once
/// \file attention_mask.hpp
/// Masks for MultiHeadAttention::forward, held in additive form: a float added to each scaled
/// score, 0 where a key may be attended to and -inf where it is hidden. Three ways to make one,
/// each with the convention PyTorch users know from the matching argument:
///
/// - `AttentionMask::additive(values)`: a float mask, added as it is (SDPA's float `attn_mask`);
/// - `AttentionMask::allowed(bools, shape)`: true = may attend, false = hidden (SDPA's boolean
///   `attn_mask`; note that nn.MultiheadAttention's boolean attn_mask means the opposite);
/// - `AttentionMask::padding(bools, shape)`: true = a padding key, hidden from every query
///   (nn.MultiheadAttention's boolean `key_padding_mask`).
///
/// A query row whose keys are all hidden gets zero attention weights and a zero output row (not
/// NaN as in PyTorch).
///
/// Example:
/// \code
///   // Two sequences, the second one padded after 3 of its 5 tokens.
///   auto pad = llm_utils::AttentionMask::padding(
///       {false, false, false, false, false, false, false, false, true, true}, {2, 5});
///   llm_utils::Tensor ctx = mha.forward(x, {.key_padding_mask = pad});
/// \endcode

#include <vector>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

class AttentionMask {
 public:
  /// No mask.
  AttentionMask() = default;

  /// A float mask added to the scaled scores (copied); -inf hides a key.
  static AttentionMask additive(ConstTensorView values);
  /// Boolean, true = may attend. `allowed` holds shape's elements in row-major order.
  static AttentionMask allowed(const std::vector<bool>& allowed, Shape shape);
  static AttentionMask allowed(const bool* allowed, Shape shape);
  /// Boolean, true = padding (hidden). `is_padding` holds shape's elements in row-major order.
  static AttentionMask padding(const std::vector<bool>& is_padding, Shape shape);
  static AttentionMask padding(const bool* is_padding, Shape shape);

  /// True for the default-constructed "no mask".
  bool empty() const { return !present_; }
  const Shape& shape() const { return values_.shape(); }
  /// The additive form: 0 / -inf for boolean masks.
  const Tensor& values() const { return values_; }

 private:
  explicit AttentionMask(Tensor values) : values_(std::move(values)), present_(true) {}
  Tensor values_;
  bool present_ = false;
};

}  // namespace llm_utils
