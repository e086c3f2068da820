#pragma once
/// \file linear.hpp
/// `torch.nn.Linear`: y = x W^T + b, weight (out_features, in_features), bias (out_features).
///
/// Construction draws the weight, then the bias, from the generator exactly as PyTorch's
/// `reset_parameters` does (kaiming_uniform_ with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))
/// with PyTorch's double-precision bound), so the same seed gives the same numbers.
///
/// Example:
/// \code
///   llm_utils::manual_seed(789);
///   llm_utils::Linear layer(3, 2, /*bias=*/false);   // == torch.nn.Linear(3, 2, bias=False)
///   llm_utils::Tensor y = layer.forward(x);          // x: (..., 3) -> y: (..., 2)
/// \endcode

#include <cstdint>
#include <optional>

#include "llm_utils/bfloat16.hpp"
#include "llm_utils/nn/parameter.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {

class Linear {
 public:
  /// Draws the parameters from `generator` (the default generator when null).
  Linear(int64_t in_features, int64_t out_features, bool bias = true,
         Generator* generator = nullptr);
  /// A layer around a given weight (out, in), no bias, without drawing anything.
  static Linear from_weight(Tensor weight, bool requires_grad = true);

  int64_t in_features() const { return weight.shape()[1]; }
  int64_t out_features() const { return weight.shape()[0]; }

  /// x: (..., in_features) -> (..., out_features).
  Tensor forward(ConstTensorView x) const;
  Tensor operator()(ConstTensorView x) const { return forward(x); }
  /// The raw form of forward: y (rows, out_features) = x (rows, in_features) W^T + b, both
  /// contiguous, y overwritten. No allocation and no checks of x and y, for callers that own
  /// those shapes; the weight's shape is fixed for the layer's life (parameter.hpp), and a bias
  /// emplaced with another shape throws ArgumentError.
  void forward_into(const float* x, int64_t rows, float* y) const;
  /// ArgumentError when the bias (an optional a caller may emplace) does not fit the weight.
  /// forward_into on bfloat16 rows x (rows, in_features): the weight rounded to bfloat16,
  /// products accumulated in float32 into y (rows, out_features), plus the float32 bias.
  void forward_into_bf16(const bfloat16* x, int64_t rows, float* y) const;
  void check_bias() const;
  /// Given the forward's input x (..., in) and dy (..., out): accumulates weight and bias
  /// gradients and, when `need_dx`, returns dx (..., in); otherwise an empty tensor.
  Tensor backward(ConstTensorView x, ConstTensorView dy, bool need_dx = true);

  /// The backward of forward_into_bf16 for its x (rows, in_features): dy (rows, out_features)
  /// float32, rounded to bfloat16 for the products dW = dy^T x and dx = dy W (float32
  /// accumulation, W rounded as in the forward); db sums the float32 dy.
  Tensor backward_bf16(const bfloat16* x, int64_t rows, ConstTensorView dy, bool need_dx = true);

  Parameter weight;               ///< (out_features, in_features)
  std::optional<Parameter> bias;  ///< (out_features), absent when built with bias = false

 private:
  Linear(Parameter weight, std::optional<Parameter> bias);
};

/// The bound PyTorch's default Linear init uses for a weight with `fan_in` inputs.
double linear_init_weight_bound(int64_t fan_in);
/// The bound PyTorch's default Linear init uses for the bias.
double linear_init_bias_bound(int64_t fan_in);

}  // namespace llm_utils
