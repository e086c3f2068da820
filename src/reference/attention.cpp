// The reference attention: plain BLAS GEMMs and a materialised (N, M) probability matrix.
// This is the oracle the fast kernels are tested against; it is never tuned.

#include "llm_utils/attention.hpp"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "llm_utils/error.hpp"
#include "reference/blas.hpp"

namespace llm_utils {
namespace {

using blas::Trans;

void expect_matrix(const char* fn, const char* name, const Shape& shape, int64_t rows,
                   int64_t cols) {
  if (shape.size() != 2 || shape[0] != rows || shape[1] != cols) {
    throw ArgumentError(std::string(fn) + ": " + name + " must have shape " +
                        shape_to_string({rows, cols}) + ", got " + shape_to_string(shape));
  }
}

void expect_rank2(const char* fn, const char* name, const Shape& shape) {
  if (shape.size() != 2) {
    throw ArgumentError(std::string(fn) + ": " + name + " must be a matrix, got shape " +
                        shape_to_string(shape));
  }
}

float scale_divisor_for(const AttentionOptions& options, int64_t head_dim) {
  if (options.scale_divisor) return *options.scale_divisor;
  // The original computes keys.shape[-1]**0.5 in double and divides a float32 tensor by it,
  // which rounds the divisor to float first.
  return static_cast<float>(std::sqrt(static_cast<double>(head_dim)));
}

void reject_unbuilt_backend(const char* fn, const AttentionOptions& options) {
  if (options.backend == Backend::flash) {
    throw ArgumentError(std::string(fn) +
                        ": backend 'flash' is not part of this build yet; use 'reference' or "
                        "'auto'");
  }
}

}  // namespace

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::reference:
      return "reference";
    case Backend::flash:
      return "flash";
    case Backend::automatic:
      return "auto";
  }
  return "?";
}

Backend parse_backend(const std::string& name) {
  if (name == "reference") return Backend::reference;
  if (name == "flash") return Backend::flash;
  if (name == "auto") return Backend::automatic;
  throw ArgumentError("unknown backend '" + name + "' (expected reference, flash or auto)");
}

void softmax_rows_inplace(TensorView scores) {
  const int64_t rows = scores.size(0);
  const int64_t cols = scores.size(1);
  for (int64_t i = 0; i < rows; ++i) {
    float* row = scores.data() + i * cols;
    float row_max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < cols; ++j) row_max = std::fmax(row_max, row[j]);
    bool row_has_nan = false;
    for (int64_t j = 0; j < cols; ++j) row_has_nan |= std::isnan(row[j]);
    if (row_has_nan) {
      for (int64_t j = 0; j < cols; ++j) row[j] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    if (row_max == -std::numeric_limits<float>::infinity()) {
      // Every score is -inf (a fully masked row): zeros, not the 0/0 = NaN of the formula.
      for (int64_t j = 0; j < cols; ++j) row[j] = 0.0f;
      continue;
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < cols; ++j) {
      row[j] = std::exp(row[j] - row_max);
      sum += row[j];
    }
    const float inv_sum = 1.0f / sum;
    for (int64_t j = 0; j < cols; ++j) row[j] *= inv_sum;
  }
}

void attention_forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView out,
                       TensorView probs, const AttentionOptions& options) {
  constexpr const char* fn = "attention_forward";
  reject_unbuilt_backend(fn, options);
  expect_rank2(fn, "q", q.shape());
  expect_rank2(fn, "k", k.shape());
  expect_rank2(fn, "v", v.shape());
  const int64_t n = q.size(0), d = q.size(1), m = k.size(0), d_v = v.size(1);
  expect_matrix(fn, "k", k.shape(), m, d);
  expect_matrix(fn, "v", v.shape(), m, d_v);
  expect_matrix(fn, "out", out.shape(), n, d_v);
  expect_matrix(fn, "probs", probs.shape(), n, m);

  // probs (N, M) = Q K^T, then / divisor, as the original: scores first, then the division.
  blas::gemm(Trans::no, Trans::yes, n, m, d, 1.0f, q.data(), d, k.data(), d, 0.0f, probs.data(), m);
  const float divisor = scale_divisor_for(options, d);
  float* p = probs.data();
  for (int64_t i = 0; i < n * m; ++i) p[i] /= divisor;
  softmax_rows_inplace(probs);
  // out (N, d_v) = P V
  blas::gemm(Trans::no, Trans::no, n, d_v, m, 1.0f, probs.data(), m, v.data(), d_v, 0.0f,
             out.data(), d_v);
}

void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                        ConstTensorView probs, ConstTensorView dout, TensorView dq, TensorView dk,
                        TensorView dv, const AttentionOptions& options) {
  constexpr const char* fn = "attention_backward";
  reject_unbuilt_backend(fn, options);
  expect_rank2(fn, "q", q.shape());
  expect_rank2(fn, "v", v.shape());
  const int64_t n = q.size(0), d = q.size(1), m = v.size(0), d_v = v.size(1);
  expect_matrix(fn, "k", k.shape(), m, d);
  expect_matrix(fn, "probs", probs.shape(), n, m);
  expect_matrix(fn, "dout", dout.shape(), n, d_v);
  if (dq.data() != nullptr) expect_matrix(fn, "dq", dq.shape(), n, d);
  if (dk.data() != nullptr) expect_matrix(fn, "dk", dk.shape(), m, d);
  if (dv.data() != nullptr) expect_matrix(fn, "dv", dv.shape(), m, d_v);

  // forward was `out = P V`, so dV = P^T dout.
  if (dv.data() != nullptr) {
    blas::gemm(Trans::yes, Trans::no, m, d_v, n, 1.0f, probs.data(), m, dout.data(), d_v, 0.0f,
               dv.data(), d_v);
  }
  if (dq.data() == nullptr && dk.data() == nullptr) return;

  // forward was `out = P V`, so dP (N, M) = dout V^T.
  std::vector<float> ds(static_cast<size_t>(n * m));  // (N, M): dP, then dS in place
  blas::gemm(Trans::no, Trans::yes, n, m, d_v, 1.0f, dout.data(), d_v, v.data(), d_v, 0.0f,
             ds.data(), m);
  // forward was `P = softmax(S)`, so dS = P * (dP - rowsum(dP * P)); and S was the raw scores
  // divided by the divisor, so the raw-score gradient is dS / divisor.
  const float divisor = scale_divisor_for(options, d);
  for (int64_t i = 0; i < n; ++i) {
    const float* p_row = probs.data() + i * m;
    float* ds_row = ds.data() + i * m;
    float row_dot = 0.0f;
    for (int64_t j = 0; j < m; ++j) row_dot += ds_row[j] * p_row[j];
    for (int64_t j = 0; j < m; ++j) ds_row[j] = p_row[j] * (ds_row[j] - row_dot) / divisor;
  }
  // forward was `raw = Q K^T`, so dQ = dRaw K and dK = dRaw^T Q.
  if (dq.data() != nullptr) {
    blas::gemm(Trans::no, Trans::no, n, d, m, 1.0f, ds.data(), m, k.data(), d, 0.0f, dq.data(), d);
  }
  if (dk.data() != nullptr) {
    blas::gemm(Trans::yes, Trans::no, m, d, n, 1.0f, ds.data(), m, q.data(), d, 0.0f, dk.data(), d);
  }
}

}  // namespace llm_utils
