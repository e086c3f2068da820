#pragma once
/// \file bfloat16.hpp
/// bfloat16 storage: the upper 16 bits of a float32 (8 exponent bits, 7 mantissa bits), the
/// format of PyTorch's torch.bfloat16. Conversion from float rounds to nearest, ties to even,
/// exactly as PyTorch's c10::BFloat16 does (subnormals kept, not flushed; NaN becomes the quiet
/// NaN 0x7FC0); conversion to float is exact. Arithmetic is never done in bfloat16 here: the
/// kernels widen to float32, accumulate in float32 and round what they store.
///
/// Example:
/// \code
///   llm_utils::BFloat16Tensor q = llm_utils::BFloat16Tensor::from_float(q32);  // rounds
///   llm_utils::Tensor back = q.to_float();                                     // exact
/// \endcode

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

/// The storage type a module computes in: float32 throughout, or bfloat16 storage of the
/// projections' inputs, weights and outputs (q, k, v, the context) with float32 accumulation
/// and softmax (Module::set_dtype).
enum class DType { float32, bfloat16 };

/// "float32" or "bfloat16".
const char* dtype_name(DType dtype);
/// Parses "float32" (or "fp32") and "bfloat16" (or "bf16"); throws ArgumentError naming the
/// value otherwise.
DType parse_dtype(const std::string& name);

/// One bfloat16 value, stored as its bits.
struct bfloat16 {
  uint16_t bits = 0;

  bfloat16() = default;
  /// Rounds to nearest even (PyTorch's rounding).
  explicit bfloat16(float value) : bits(round_bits(value)) {}
  static bfloat16 from_bits(uint16_t bits) {
    bfloat16 b;
    b.bits = bits;
    return b;
  }
  /// Exact.
  explicit operator float() const {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }

  /// The bits of the bfloat16 nearest `value`, ties to even; NaN gives 0x7FC0.
  static uint16_t round_bits(float value) {
    uint32_t u;
    std::memcpy(&u, &value, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;  // NaN
    u += 0x7FFFu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
  }
};
static_assert(sizeof(bfloat16) == 2, "bfloat16 is two bytes");

inline bool operator==(bfloat16 a, bfloat16 b) {
  return a.bits == b.bits;
}
inline bool operator!=(bfloat16 a, bfloat16 b) {
  return a.bits != b.bits;
}

/// `value` rounded to bfloat16 and back: the float32 a bfloat16 tensor would hold.
inline float round_to_bfloat16(float value) {
  return static_cast<float>(bfloat16(value));
}

using BFloat16View = BasicTensorView<bfloat16>;
using ConstBFloat16View = BasicTensorView<const bfloat16>;

/// Owning bfloat16 tensor, contiguous row-major. Copying copies the data; moving is cheap.
class BFloat16Tensor {
 public:
  /// An empty tensor of shape [0].
  BFloat16Tensor() : shape_{0} {}
  /// Zeros of the given shape.
  explicit BFloat16Tensor(Shape shape);
  /// Each element of `values` rounded to bfloat16 (a strided view is read through its strides).
  static BFloat16Tensor from_float(ConstTensorView values);
  /// The values widened to float32 (exact).
  Tensor to_float() const;

  const Shape& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t numel() const { return static_cast<int64_t>(data_.size()); }
  bfloat16* data() { return data_.data(); }
  const bfloat16* data() const { return data_.data(); }
  bfloat16& operator[](int64_t i) { return data_[static_cast<size_t>(i)]; }
  bfloat16 operator[](int64_t i) const { return data_[static_cast<size_t>(i)]; }

  BFloat16View view() { return {data(), shape_}; }
  ConstBFloat16View view() const { return {data(), shape_}; }
  operator BFloat16View() { return view(); }             // NOLINT(google-explicit-constructor)
  operator ConstBFloat16View() const { return view(); }  // NOLINT(google-explicit-constructor)

 private:
  Shape shape_;
  std::vector<bfloat16> data_;
};

/// Widens a bfloat16 view (strided or not) to a new contiguous float32 tensor (exact).
Tensor to_float(ConstBFloat16View values);

}  // namespace llm_utils
