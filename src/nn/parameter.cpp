#include "llm_utils/nn/parameter.hpp"

#include "llm_utils/error.hpp"

namespace llm_utils {

const Tensor& Parameter::grad() const {
  if (!has_grad_) throw StateError("grad: no gradient has reached this parameter (it is None)");
  return grad_;
}

Tensor& Parameter::grad() {
  if (!has_grad_) throw StateError("grad: no gradient has reached this parameter (it is None)");
  return grad_;
}

void Parameter::accumulate_grad(ConstTensorView g) {
  if (g.shape() != data.shape()) {
    throw ArgumentError("accumulate_grad: gradient has shape " + shape_to_string(g.shape()) +
                        ", parameter has shape " + shape_to_string(data.shape()));
  }
  if (!requires_grad) return;
  Tensor g_copy;
  g = contiguous(g, g_copy);
  if (!has_grad_) {
    grad_ = Tensor::from_view(g);
    has_grad_ = true;
    return;
  }
  float* dst = grad_.data();
  const float* src = g.data();
  for (int64_t i = 0; i < grad_.numel(); ++i) dst[i] += src[i];
}

void Parameter::zero_grad(bool set_to_none) {
  if (set_to_none) {
    grad_ = Tensor();
    has_grad_ = false;
  } else if (has_grad_) {
    grad_.zero();
  }
}

}  // namespace llm_utils
