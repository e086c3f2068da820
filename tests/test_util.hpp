#pragma once
// Shared helpers for the suites: reading golden fixtures and comparing tensors with
// tolerances scaled by the reference's magnitude.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "llm_utils/llm_utils.hpp"

namespace llm_utils::testing {

inline std::string golden_path(const std::string& relative) {
  return std::string(LLM_UTILS_GOLDEN_DIR) + "/" + relative;
}

struct Golden {
  StateDict tensors;
  io::Metadata meta;
  const Tensor& operator[](const std::string& key) const { return tensors.at(key); }
  bool has(const std::string& key) const { return tensors.contains(key); }
  int64_t meta_int(const std::string& key) const { return std::stoll(meta.at(key)); }
};

inline Golden load_golden(const std::string& relative) {
  Golden g;
  g.tensors = io::load_safetensors(golden_path(relative), &g.meta);
  return g;
}

/// Every element within atol + rtol * |expected|; reports the worst element. Views may be
/// strided (they are compared element by element in row-major order).
inline ::testing::AssertionResult all_close(ConstTensorView actual_view,
                                            ConstTensorView expected_view, double rtol,
                                            double atol) {
  Tensor actual_copy, expected_copy;
  const ConstTensorView actual = contiguous(actual_view, actual_copy);
  const ConstTensorView expected = contiguous(expected_view, expected_copy);
  if (actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure() << "shape " << shape_to_string(actual.shape())
                                         << " != expected " << shape_to_string(expected.shape());
  }
  const int64_t n = expected.numel();
  double worst_excess = 0.0;
  int64_t worst = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double a = actual.data()[i], e = expected.data()[i];
    if (std::isnan(e) && std::isnan(a)) continue;
    const double err = std::fabs(a - e);
    const double allowed = atol + rtol * std::fabs(e);
    if (!(err <= allowed) && (worst < 0 || err - allowed > worst_excess)) {
      worst_excess = err - allowed;
      worst = i;
    }
  }
  if (worst < 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "element " << worst << ": actual " << actual.data()[worst] << ", expected "
         << expected.data()[worst] << " (shape " << shape_to_string(expected.shape()) << ")";
}

/// The project's parity target: |a - e| <= 1e-5 * max(1, |e|).
inline ::testing::AssertionResult parity(ConstTensorView actual, ConstTensorView expected) {
  return all_close(actual, expected, 1e-5, 1e-5);
}

/// Bit-for-bit equality (views may be strided).
inline ::testing::AssertionResult bit_equal(ConstTensorView actual_view,
                                            ConstTensorView expected_view) {
  Tensor actual_copy, expected_copy;
  const ConstTensorView actual = contiguous(actual_view, actual_copy);
  const ConstTensorView expected = contiguous(expected_view, expected_copy);
  if (actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure() << "shape " << shape_to_string(actual.shape())
                                         << " != expected " << shape_to_string(expected.shape());
  }
  for (int64_t i = 0; i < expected.numel(); ++i) {
    if (std::memcmp(actual.data() + i, expected.data() + i, sizeof(float)) != 0) {
      return ::testing::AssertionFailure() << "element " << i << ": " << actual.data()[i]
                                           << " != expected " << expected.data()[i];
    }
  }
  return ::testing::AssertionSuccess();
}

/// The message of the ArgumentError `fn()` throws, or "no ArgumentError".
template <typename F>
std::string argument_error_of(F&& fn) {
  try {
    fn();
  } catch (const ArgumentError& e) {
    return e.what();
  }
  return "no ArgumentError";
}

/// Rows [start, start + n) of a (T, ...) tensor, as (n, the rest flattened).
inline Tensor rows_of(const Tensor& t, int64_t start, int64_t n) {
  const int64_t cols = t.numel() / t.size(0);
  Tensor out({n, cols});
  std::copy(t.data() + start * cols, t.data() + (start + n) * cols, out.data());
  return out;
}

inline double max_abs(ConstTensorView t) {
  double m = 0.0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(double(t.data()[i])));
  return m;
}

}  // namespace llm_utils::testing
