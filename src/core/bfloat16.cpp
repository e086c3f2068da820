#include "llm_utils/bfloat16.hpp"

#include <algorithm>
#include <utility>

#include "llm_utils/error.hpp"

namespace llm_utils {
namespace {

// Calls f(src_element, dst_index) for every element of a strided view, row-major.
template <typename T, typename F>
void for_each_element(const BasicTensorView<T>& view, F&& f) {
  const Shape& shape = view.shape();
  const Shape strides = view.strides();
  const int64_t n = view.numel();
  if (n == 0) return;
  if (view.is_contiguous()) {
    for (int64_t i = 0; i < n; ++i) f(view.data()[i], i);
    return;
  }
  Shape index(shape.size(), 0);
  int64_t offset = 0;
  for (int64_t i = 0; i < n; ++i) {
    f(view.data()[offset], i);
    // Advance the multi-index, innermost dimension first.
    for (size_t d = shape.size(); d-- > 0;) {
      offset += strides[d];
      if (++index[d] < shape[d]) break;
      offset -= strides[d] * shape[d];
      index[d] = 0;
    }
  }
}

}  // namespace

const char* dtype_name(DType dtype) {
  return dtype == DType::bfloat16 ? "bfloat16" : "float32";
}

DType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32") return DType::float32;
  if (name == "bfloat16" || name == "bf16") return DType::bfloat16;
  throw ArgumentError("unknown dtype '" + name + "' (expected float32, fp32, bfloat16 or bf16)");
}

BFloat16Tensor::BFloat16Tensor(Shape shape)
    : shape_(std::move(shape)), data_(static_cast<size_t>(shape_numel(shape_))) {}

BFloat16Tensor BFloat16Tensor::from_float(ConstTensorView values) {
  BFloat16Tensor t(values.shape());
  for_each_element(values,
                   [&t](float x, int64_t i) { t.data_[static_cast<size_t>(i)] = bfloat16(x); });
  return t;
}

Tensor BFloat16Tensor::to_float() const {
  return llm_utils::to_float(view());
}

Tensor to_float(ConstBFloat16View values) {
  Tensor t(values.shape());
  float* out = t.data();
  for_each_element(values, [out](bfloat16 x, int64_t i) { out[i] = static_cast<float>(x); });
  return t;
}

}  // namespace llm_utils
