// AttentionMask: boolean masks turned into their additive form once, at construction.

#include "llm_utils/nn/attention_mask.hpp"

#include <limits>
#include <string>

#include "llm_utils/error.hpp"

namespace llm_utils {
namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// values[i] = hidden(flag i) ? -inf : 0 for each of shape's elements.
template <typename Flags>
Tensor additive_from_flags(const Flags& flags, int64_t count, const Shape& shape, bool true_hides,
                           const char* fn) {
  const int64_t numel = shape_numel(shape);
  if (count >= 0 && count != numel) {
    throw ArgumentError(std::string("AttentionMask::") + fn + ": " + std::to_string(count) +
                        " values for shape " + shape_to_string(shape) + ", which has " +
                        std::to_string(numel));
  }
  Tensor values(shape);
  for (int64_t i = 0; i < numel; ++i) {
    const bool flag = flags[static_cast<size_t>(i)];
    values[i] = flag == true_hides ? kMinusInf : 0.0f;
  }
  return values;
}

}  // namespace

AttentionMask AttentionMask::additive(ConstTensorView values) {
  return AttentionMask(Tensor::from_view(values));
}

AttentionMask AttentionMask::allowed(const std::vector<bool>& allowed, Shape shape) {
  return AttentionMask(additive_from_flags(allowed, static_cast<int64_t>(allowed.size()), shape,
                                           /*true_hides=*/false, "allowed"));
}

AttentionMask AttentionMask::allowed(const bool* allowed, Shape shape) {
  return AttentionMask(additive_from_flags(allowed, -1, shape, /*true_hides=*/false, "allowed"));
}

AttentionMask AttentionMask::padding(const std::vector<bool>& is_padding, Shape shape) {
  return AttentionMask(additive_from_flags(is_padding, static_cast<int64_t>(is_padding.size()),
                                           shape, /*true_hides=*/true, "padding"));
}

AttentionMask AttentionMask::padding(const bool* is_padding, Shape shape) {
  return AttentionMask(additive_from_flags(is_padding, -1, shape, /*true_hides=*/true, "padding"));
}

}  // namespace llm_utils
