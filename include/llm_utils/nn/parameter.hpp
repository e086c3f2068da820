#pragma once
/// \file parameter.hpp
/// A learnable tensor with its gradient, PyTorch-style: `grad` is undefined ("None") until a
/// backward pass reaches the parameter, then accumulates with `+=`.

#include <string>
#include <utility>
#include <vector>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

class Parameter {
 public:
  Parameter() = default;
  explicit Parameter(Tensor data, bool requires_grad = true)
      : data(std::move(data)), requires_grad(requires_grad) {}

  Tensor data;
  /// Frozen parameters (`requires_grad = false`) never receive a gradient.
  bool requires_grad = true;

  /// False while PyTorch's `.grad` would be None.
  bool has_grad() const { return has_grad_; }
  /// The gradient; throws StateError when has_grad() is false.
  const Tensor& grad() const;
  Tensor& grad();
  /// grad += g (grad starts at zero the first time). Shape must equal data's.
  void accumulate_grad(ConstTensorView g);
  /// set_to_none: forget the gradient (None); otherwise set an existing one to zeros.
  void zero_grad(bool set_to_none = true);

 private:
  Tensor grad_;
  bool has_grad_ = false;
};

/// (name, parameter) pairs in PyTorch's `named_parameters()` order.
using NamedParameters = std::vector<std::pair<std::string, Parameter*>>;

}  // namespace llm_utils
