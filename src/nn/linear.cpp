#include "llm_utils/nn/linear.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/gemm.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils {

using kernels::Trans;

double linear_init_weight_bound(int64_t fan_in) {
  // kaiming_uniform_(w, a=sqrt(5)): gain = sqrt(2 / (1 + a^2)), std = gain / sqrt(fan_in),
  // bound = sqrt(3) * std, all in Python floats (double), in this order.
  const double a = std::sqrt(5.0);
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  const double std_dev = gain / std::sqrt(static_cast<double>(fan_in));
  return std::sqrt(3.0) * std_dev;
}

double linear_init_bias_bound(int64_t fan_in) {
  return fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
}

namespace {
Parameter draw_weight(int64_t in_features, int64_t out_features, Generator* generator) {
  if (in_features <= 0 || out_features <= 0) {
    throw ArgumentError("Linear: in_features and out_features must be positive, got in_features=" +
                        std::to_string(in_features) +
                        ", out_features=" + std::to_string(out_features));
  }
  Generator& gen = generator != nullptr ? *generator : default_generator();
  const double bound = linear_init_weight_bound(in_features);
  return Parameter(gen.uniform({out_features, in_features}, -bound, bound));
}

std::optional<Parameter> draw_bias(int64_t in_features, int64_t out_features, bool bias,
                                   Generator* generator) {
  if (!bias) return std::nullopt;
  Generator& gen = generator != nullptr ? *generator : default_generator();
  const double bound = linear_init_bias_bound(in_features);
  return Parameter(gen.uniform({out_features}, -bound, bound));
}
}  // namespace

// The weight is drawn before the bias: members initialise in declaration order.
Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Generator* generator)
    : weight(draw_weight(in_features, out_features, generator)),
      bias(draw_bias(in_features, out_features, bias, generator)) {}

Linear::Linear(Parameter weight, std::optional<Parameter> bias)
    : weight(std::move(weight)), bias(std::move(bias)) {}

Linear Linear::from_weight(Tensor weight, bool requires_grad) {
  if (weight.dim() != 2) {
    throw ArgumentError("Linear::from_weight: weight must be (out_features, in_features), got " +
                        shape_to_string(weight.shape()));
  }
  return Linear(Parameter(std::move(weight), requires_grad), std::nullopt);
}

namespace {
// Rows of the (rows, features) matrix a (..., features) tensor is viewed as.
int64_t rows_of(ConstTensorView x, int64_t features, const char* fn, const char* name) {
  if (x.dim() < 1 || x.size(-1) != features) {
    throw ArgumentError(std::string(fn) + ": " + name + " must end in a dimension of " +
                        std::to_string(features) + ", got shape " + shape_to_string(x.shape()));
  }
  return features == 0 ? 0 : x.numel() / features;
}
}  // namespace

Tensor Linear::forward(ConstTensorView x) const {
  const int64_t rows = rows_of(x, in_features(), "Linear::forward", "x");
  Tensor x_copy;
  x = contiguous(x, x_copy);
  Shape y_shape = x.shape();
  y_shape.back() = out_features();
  Tensor y(y_shape);  // (..., out)
  forward_into(x.data(), rows, y.data());
  return y;
}

void Linear::check_bias() const {
  // The bias is an std::optional a caller may have emplaced with another shape.
  if (bias && bias->shape() != Shape{out_features()}) {
    throw ArgumentError("Linear: bias has shape " + shape_to_string(bias->shape()) +
                        ", the weight needs (" + std::to_string(out_features()) + ")");
  }
}

void Linear::forward_into(const float* x, int64_t rows, float* y) const {
  const int64_t in = in_features(), out = out_features();
  check_bias();
  if (bias) {
    const ConstTensorView b = bias->data();  // (out)
    for (int64_t r = 0; r < rows; ++r) std::copy(b.data(), b.data() + out, y + r * out);
  }
  // y (rows, out) = x (rows, in) W^T (in, out) + y
  kernels::gemm(Trans::no, Trans::yes, rows, out, in, 1.0f, x, in, weight.data().data(), in,
                bias ? 1.0f : 0.0f, y, out);
}

namespace {
// db (cols) = the column sums of dy (rows, cols), row after row as PyTorch's Linear.
Tensor column_sums(const float* dy, int64_t rows, int64_t cols) {
  Tensor db({cols});
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) db[j] += dy[r * cols + j];
  }
  return db;
}
}  // namespace

Tensor Linear::backward(ConstTensorView x, ConstTensorView dy, bool need_dx) {
  const int64_t in = in_features(), out = out_features();
  const int64_t rows = rows_of(x, in, "Linear::backward", "x");
  if (rows_of(dy, out, "Linear::backward", "dy") != rows) {
    throw ArgumentError("Linear::backward: dy has shape " + shape_to_string(dy.shape()) +
                        ", input x had shape " + shape_to_string(x.shape()));
  }
  Tensor x_copy, dy_copy;
  x = contiguous(x, x_copy);
  dy = contiguous(dy, dy_copy);
  // forward was `y = x W^T + b`, so dW (out, in) = dy^T x and db (out) = column sums of dy.
  if (weight.requires_grad()) {
    Tensor dw({out, in});
    kernels::gemm(Trans::yes, Trans::no, out, in, rows, 1.0f, dy.data(), out, x.data(), in, 0.0f,
                  dw.data(), in);
    weight.accumulate_grad(dw);
  }
  if (bias && bias->requires_grad()) bias->accumulate_grad(column_sums(dy.data(), rows, out));
  if (!need_dx) return {};
  // ... and dx (rows, in) = dy W.
  Tensor dx(x.shape());
  kernels::gemm(Trans::no, Trans::no, rows, in, out, 1.0f, dy.data(), out, weight.data().data(), in,
                0.0f, dx.data(), in);
  return dx;
}

void Linear::forward_into_bf16(const bfloat16* x, int64_t rows, float* y) const {
  const int64_t in = in_features(), out = out_features();
  check_bias();
  const BFloat16Tensor w = BFloat16Tensor::from_float(weight.data());  // (out, in)
  if (bias) {
    const ConstTensorView b = bias->data();  // (out)
    for (int64_t r = 0; r < rows; ++r) std::copy(b.data(), b.data() + out, y + r * out);
  }
  // y (rows, out) = x (rows, in) W^T (in, out) + y
  kernels::gemm_bf16(Trans::no, Trans::yes, rows, out, in, 1.0f, x, in, w.data(), in,
                     bias ? 1.0f : 0.0f, y, out);
}

Tensor Linear::backward_bf16(const bfloat16* x, int64_t rows, ConstTensorView dy, bool need_dx) {
  const int64_t in = in_features(), out = out_features();
  if (rows_of(dy, out, "Linear::backward", "dy") != rows) {
    throw ArgumentError("Linear::backward: dy has shape " + shape_to_string(dy.shape()) + " for " +
                        std::to_string(rows) + " rows of x");
  }
  Tensor dy_copy;
  dy = contiguous(dy, dy_copy);
  const BFloat16Tensor dy_bf = BFloat16Tensor::from_float(dy);  // (rows, out)
  // forward was `y = x W^T + b`, so dW (out, in) = dy^T x and db (out) = column sums of dy.
  if (weight.requires_grad()) {
    Tensor dw({out, in});
    kernels::gemm_bf16(Trans::yes, Trans::no, out, in, rows, 1.0f, dy_bf.data(), out, x, in, 0.0f,
                       dw.data(), in);
    weight.accumulate_grad(dw);
  }
  if (bias && bias->requires_grad()) bias->accumulate_grad(column_sums(dy.data(), rows, out));
  if (!need_dx) return {};
  // ... and dx (rows, in) = dy W.
  const BFloat16Tensor w = BFloat16Tensor::from_float(weight.data());  // (out, in)
  Tensor dx({rows, in});
  kernels::gemm_bf16(Trans::no, Trans::no, rows, in, out, 1.0f, dy_bf.data(), out, w.data(), in,
                     0.0f, dx.data(), in);
  return dx;
}

}  // namespace llm_utils
