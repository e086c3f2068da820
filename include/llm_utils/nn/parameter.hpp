#pragma once
/// \file parameter.hpp
/// A learnable tensor with its gradient, PyTorch-style: `grad` is undefined ("None") until a
/// backward pass reaches the parameter, then accumulates with `+=`.
///
/// Two types share one interface:
///
/// - `Parameter`, what a module holds (`lin.W_query.weight`). Copying one makes a new parameter
///   with copies of the values and gradient (so copying a module gives an independent one);
///   moving one keeps the same parameter. A module's parameters are never replaced, only
///   written in place: there is no assignment, and values go in through `copy_from` (or the
///   mutable `data()` view), so a parameter's shape is fixed for its life.
/// - `ParameterRef`, a reference that keeps the parameter alive, as a torch Tensor does: what
///   `named_parameters()` hands out and optimizers keep. Copying a ParameterRef shares. A
///   ParameterRef stays valid when its module is moved, copied or destroyed.
///
/// Example:
/// \code
///   llm_utils::SelfAttention_Linear sa(3, 2);
///   for (auto& [name, p] : sa.named_parameters()) p.data()[0] = 0.0f;   // writes sa's weights
///   llm_utils::AdamW opt(sa.named_parameters(), {});   // fine even if sa is moved later
/// \endcode

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

namespace detail {
struct ParameterState;  // src/nn/parameter.cpp
}

class ParameterRef {
 public:
  /// Refers to no parameter (defined() is false); everything else throws StateError.
  ParameterRef() = default;

  bool defined() const { return state_ != nullptr; }
  const Shape& shape() const;
  int64_t numel() const;

  /// The values, a view of the parameter's own storage (valid while any reference to it lives).
  ConstTensorView data() const;
  TensorView data();
  /// The same storage as a read-only Tensor (its shape, at(), to_vector()).
  const Tensor& tensor() const;
  /// Copies `values` into the parameter; ArgumentError (and no change) on another shape.
  void copy_from(ConstTensorView values);

  /// Frozen parameters (`requires_grad = false`) never receive a gradient.
  bool requires_grad() const;
  /// False while PyTorch's `.grad` would be None.
  bool has_grad() const;
  /// The gradient; throws StateError when has_grad() is false.
  ConstTensorView grad() const;
  TensorView grad();
  /// grad += g (grad starts at zero the first time); nothing for a frozen parameter. The shape
  /// must equal the parameter's.
  void accumulate_grad(ConstTensorView g);
  /// set_to_none: forget the gradient (None); otherwise set an existing one to zeros.
  void zero_grad(bool set_to_none = true);

  /// Whether both refer to the same parameter.
  bool same_as(const ParameterRef& other) const { return state_ == other.state_; }

 protected:
  explicit ParameterRef(std::shared_ptr<detail::ParameterState> state) : state_(std::move(state)) {}
  detail::ParameterState& state() const;

  std::shared_ptr<detail::ParameterState> state_;
};

class Parameter : public ParameterRef {
 public:
  explicit Parameter(Tensor data, bool requires_grad = true);
  /// A new parameter with copies of `other`'s values, gradient and requires_grad.
  Parameter(const Parameter& other);
  /// The same parameter: references to it stay valid.
  Parameter(Parameter&& other) noexcept = default;
  Parameter& operator=(const Parameter&) = delete;
  Parameter& operator=(Parameter&&) = delete;
  ~Parameter() = default;
};

/// (name, parameter) pairs in PyTorch's `named_parameters()` order.
using NamedParameters = std::vector<std::pair<std::string, ParameterRef>>;

}  // namespace llm_utils
