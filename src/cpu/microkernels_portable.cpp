// The portable microkernels: plain C++ for baseline x86-64 (SSE2), for CPUs without AVX2 and
// as the tests' second opinion on the SIMD tables. Written so the compiler vectorises the inner
// loops over contiguous columns.

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/microkernels.hpp"
#include "cpu/online_softmax.hpp"

namespace llm_utils::cpu {
namespace portable_impl {
namespace {

constexpr int64_t kColumnChunk = 256;

void gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  float acc[kColumnChunk];  // one row of the product, a chunk of columns at a time
  for (int64_t j0 = 0; j0 < n; j0 += kColumnChunk) {
    const int64_t nc = std::min(kColumnChunk, n - j0);
    for (int64_t i = 0; i < m; ++i) {
      std::fill(acc, acc + nc, 0.0f);
      const float* a_row = a + i * lda;
      for (int64_t p = 0; p < k; ++p) {
        const float a_ip = a_row[p];
        const float* b_row = b + p * ldb + j0;
        for (int64_t j = 0; j < nc; ++j) acc[j] += a_ip * b_row[j];
      }
      float* c_row = c + i * ldc + j0;
      if (accumulate) {
        for (int64_t j = 0; j < nc; ++j) c_row[j] += alpha * acc[j];
      } else {
        for (int64_t j = 0; j < nc; ++j) c_row[j] = alpha * acc[j];
      }
    }
  }
}

void transpose(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd) {
  constexpr int64_t kTile = 16;  // cache-friendly blocks
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) dst[c * ldd + r] = src[r * lds + c];
      }
    }
  }
}

float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t p = 0; p < n; ++p) acc += a[p] * b[p];  // as gemm's `acc[j] += a_ip * b_row[j]`
  return acc;
}

float row_max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  bool nan = false;
  for (int64_t j = 0; j < n; ++j) {
    m = x[j] > m ? x[j] : m;
    nan |= x[j] != x[j];
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

// (x - center) * scale is rounded before `offset` is subtracted: this file is compiled with
// -ffp-contract=off (CMakeLists.txt), so no build fuses the two.
float exp_centered_sum(float* x, int64_t n, float scale, float center, float offset) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    x[j] = std::exp((x[j] - center) * scale - offset);
    sum += x[j];
  }
  return sum;
}

void exp_centered_each(float* x, int64_t n, float scale, const float* centers,
                       const float* offsets) {
  for (int64_t j = 0; j < n; ++j) {
    const float off = offsets[j];
    const float c = centers != nullptr ? centers[j] : 0.0f;
    x[j] =
        off == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp((x[j] - c) * scale - off);
  }
}

void softmax_grad(const float* p, float* dp, const float* dsum, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - dsum[j]);
}

void online_softmax(float* s, int64_t ld, int64_t rows, int64_t cols, float scale, float* m,
                    float* l, float* acc, int64_t ld_acc, int64_t acc_cols) {
  online_softmax_by_rows(row_max, exp_centered_sum, s, ld, rows, cols, scale, m, l, acc, ld_acc,
                         acc_cols);
}

void softcap(float* x, int64_t n, float scale, float cap, float* grad) {
  for (int64_t j = 0; j < n; ++j) {
    const float t = std::tanh(x[j] * scale / cap);
    x[j] = cap * t;
    if (grad != nullptr) grad[j] = 1.0f - t * t;
  }
}

}  // namespace
}  // namespace portable_impl

const Microkernels& portable_microkernels() {
  static const Microkernels table{Isa::portable,
                                  portable_impl::gemm,
                                  portable_impl::transpose,
                                  portable_impl::dot,
                                  portable_impl::row_max,
                                  portable_impl::exp_centered_sum,
                                  portable_impl::exp_centered_each,
                                  portable_impl::softmax_grad,
                                  portable_impl::online_softmax,
                                  portable_impl::softcap};
  return table;
}

}  // namespace llm_utils::cpu
