#include "llm_utils/nn/parameter.hpp"

#include <cstring>

#include "llm_utils/error.hpp"

namespace llm_utils {

namespace detail {
// What a Parameter and its ParameterRefs share.
struct ParameterState {
  Tensor data;
  Tensor grad;  // the data's shape once has_grad
  bool has_grad = false;
  bool requires_grad = true;
};
}  // namespace detail

detail::ParameterState& ParameterRef::state() const {
  if (state_ == nullptr) {
    throw StateError(
        "parameter: this reference refers to no parameter (default-built or moved "
        "from)");
  }
  return *state_;
}

const Shape& ParameterRef::shape() const {
  return state().data.shape();
}

int64_t ParameterRef::numel() const {
  return state().data.numel();
}

ConstTensorView ParameterRef::data() const {
  const detail::ParameterState& s = state();
  return s.data.view();
}

TensorView ParameterRef::data() {
  return state().data.view();
}

const Tensor& ParameterRef::tensor() const {
  return state().data;
}

void ParameterRef::copy_from(ConstTensorView values) {
  detail::ParameterState& s = state();
  if (values.shape() != s.data.shape()) {
    throw ArgumentError("copy_from: values have shape " + shape_to_string(values.shape()) +
                        ", parameter has shape " + shape_to_string(s.data.shape()));
  }
  Tensor copy;
  values = contiguous(values, copy);
  // memmove: the values may be (part of) the parameter's own data.
  if (s.data.numel() > 0) {
    std::memmove(s.data.data(), values.data(), static_cast<size_t>(s.data.numel()) * sizeof(float));
  }
}

bool ParameterRef::requires_grad() const {
  return state().requires_grad;
}

bool ParameterRef::has_grad() const {
  return state().has_grad;
}

ConstTensorView ParameterRef::grad() const {
  const detail::ParameterState& s = state();
  if (!s.has_grad) throw StateError("grad: no gradient has reached this parameter (it is None)");
  return s.grad.view();
}

TensorView ParameterRef::grad() {
  detail::ParameterState& s = state();
  if (!s.has_grad) throw StateError("grad: no gradient has reached this parameter (it is None)");
  return s.grad.view();
}

void ParameterRef::accumulate_grad(ConstTensorView g) {
  detail::ParameterState& s = state();
  if (g.shape() != s.data.shape()) {
    throw ArgumentError("accumulate_grad: gradient has shape " + shape_to_string(g.shape()) +
                        ", parameter has shape " + shape_to_string(s.data.shape()));
  }
  if (!s.requires_grad) return;
  Tensor g_copy;
  g = contiguous(g, g_copy);
  if (!s.has_grad) {
    s.grad = Tensor::from_view(g);
    s.has_grad = true;
    return;
  }
  float* dst = s.grad.data();
  const float* src = g.data();
  for (int64_t i = 0; i < s.grad.numel(); ++i) dst[i] += src[i];
}

void ParameterRef::zero_grad(bool set_to_none) {
  detail::ParameterState& s = state();
  if (set_to_none) {
    s.grad = Tensor();
    s.has_grad = false;
  } else if (s.has_grad) {
    s.grad.zero();
  }
}

Parameter::Parameter(Tensor data, bool requires_grad)
    : ParameterRef(std::make_shared<detail::ParameterState>()) {
  state_->data = std::move(data);
  state_->requires_grad = requires_grad;
}

Parameter::Parameter(const Parameter& other)
    : ParameterRef(std::make_shared<detail::ParameterState>(other.state())) {}

}  // namespace llm_utils
