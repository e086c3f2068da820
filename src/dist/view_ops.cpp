// copy_into and add_into (view_ops.hpp): a walk over every index but the last, then a loop
// along the last dimension.

#include "dist/view_ops.hpp"

#include "llm_utils/error.hpp"

namespace llm_utils::dist::detail {
namespace {

template <typename Op>
void walk(const float* src, const Shape& src_strides, float* dst, const Shape& dst_strides,
          const Shape& shape, size_t d, Op op) {
  const int64_t n = shape[d], s = src_strides[d], t = dst_strides[d];
  if (d + 1 == shape.size()) {
    for (int64_t i = 0; i < n; ++i) op(dst[i * t], src[i * s]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    walk(src + i * s, src_strides, dst + i * t, dst_strides, shape, d + 1, op);
  }
}

template <typename Op>
void elementwise(const char* fn, ConstTensorView src, TensorView dst, Op op) {
  if (src.shape() != dst.shape()) {
    throw ArgumentError(std::string(fn) + ": shapes differ, " + shape_to_string(src.shape()) +
                        " and " + shape_to_string(dst.shape()));
  }
  if (src.numel() == 0) return;
  if (src.dim() == 0) {
    op(*dst.data(), *src.data());
    return;
  }
  walk(src.data(), src.strides(), dst.data(), dst.strides(), src.shape(), 0, op);
}

}  // namespace

void copy_into(ConstTensorView src, TensorView dst) {
  elementwise("copy_into", src, dst, [](float& to, float from) { to = from; });
}

void add_into(ConstTensorView src, TensorView dst) {
  elementwise("add_into", src, dst, [](float& to, float from) { to += from; });
}

}  // namespace llm_utils::dist::detail
