// The reference attention, one batch element at a time, following the original's operation
// order: raw = Q K^T, S = raw / divisor (+ mask), P = softmax(S) with the row max subtracted,
// O = P V.

#include "llm_utils/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "reference/attention_reference.hpp"
#include "reference/plain_gemm.hpp"

namespace llm_utils {
namespace reference {
namespace {

using detail::Trans;
constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// scores (N, M) = Q_b K_b^T / divisor + mask, with hidden keys at -inf.
void scores(const AttentionProblem& p, int64_t b, float* s) {
  gemm(Trans::no, Trans::yes, p.n, p.m, p.d, 1.0f, p.q + b * p.n * p.d, p.d, p.k_of(b), p.d,
             0.0f, s, p.m);
  const float* mask = p.mask != nullptr ? p.mask_of(b) : nullptr;
  for (int64_t i = 0; i < p.n; ++i) {
    const int64_t visible_end = p.visible_end(i);
    for (int64_t j = 0; j < p.m; ++j) {
      float& x = s[i * p.m + j];
      x /= p.divisor;
      if (mask != nullptr) x += mask[p.mask_index(i, j)];
      if (j >= visible_end) x = kMinusInf;
    }
  }
}

// P (N, M) recomputed exactly as the forward computed it (the scores, then the softmax with
// the row max subtracted), so the backward sees the same bits PyTorch's autograd saves. Using
// exp(S - lse) instead would differ in the last bits, which saturated softmax rows amplify.
void probabilities(const AttentionProblem& p, int64_t b, float* s) {
  scores(p, b, s);
  softmax_rows_inplace(TensorView(s, {p.n, p.m}));
}

}  // namespace

void attention_forward(const AttentionProblem& p, float* out, float* lse) {
  std::vector<float> s(static_cast<size_t>(p.n * p.m));  // (N, M) scores, then P
  for (int64_t b = 0; b < p.batch; ++b) {
    scores(p, b, s.data());
    // The softmax of each row, as softmax_rows_inplace computes it, keeping its max and sum:
    // lse_i = max + log(sum exp(S - max)).
    for (int64_t i = 0; i < p.n; ++i) {
      float* row = s.data() + i * p.m;
      float row_max = kMinusInf;
      bool nan = false;
      for (int64_t j = 0; j < p.m; ++j) {
        row_max = row[j] > row_max ? row[j] : row_max;
        nan |= std::isnan(row[j]);
      }
      float& row_lse = lse[b * p.n + i];
      if (nan || row_max == kMinusInf) {
        // NaN anywhere: the row is NaN; no visible key: zeros, not 0/0.
        const float fill = nan ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
        std::fill(row, row + p.m, fill);
        row_lse = nan ? fill : kMinusInf;
        continue;
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < p.m; ++j) {
        row[j] = std::exp(row[j] - row_max);
        sum += row[j];
      }
      const float inv_sum = 1.0f / sum;
      for (int64_t j = 0; j < p.m; ++j) row[j] *= inv_sum;
      row_lse = row_max + std::log(sum);
    }
    // out (N, dv) = P V
    gemm(Trans::no, Trans::no, p.n, p.dv, p.m, 1.0f, s.data(), p.m, p.v_of(b), p.dv, 0.0f,
               out + b * p.n * p.dv, p.dv);
  }
}

void attention_backward(const AttentionProblem& p, const float* dout, float* dq, float* dk,
                        float* dv) {
  std::vector<float> probs(static_cast<size_t>(p.n * p.m));  // (N, M) P
  std::vector<float> ds(static_cast<size_t>(p.n * p.m));     // (N, M) dP, then dS
  for (int64_t b = 0; b < p.batch; ++b) {
    probabilities(p, b, probs.data());
    const float* dout_b = dout + b * p.n * p.dv;
    const float* v_b = p.v_of(b);
    // The kv_group query heads of one k/v element add up their dK and dV: the first one
    // overwrites, the rest accumulate (beta = 1).
    const int64_t kv = b / p.kv_group;
    const float beta = b % p.kv_group == 0 ? 0.0f : 1.0f;
    // forward was `out = P V`, so dV = P^T dout ...
    gemm(Trans::yes, Trans::no, p.m, p.dv, p.n, 1.0f, probs.data(), p.m, dout_b, p.dv, beta,
               dv + kv * p.m * p.dv, p.dv);
    if (dq == nullptr && dk == nullptr) continue;
    // ... and dP (N, M) = dout V^T.
    gemm(Trans::no, Trans::yes, p.n, p.m, p.dv, 1.0f, dout_b, p.dv, v_b, p.dv, 0.0f,
               ds.data(), p.m);
    // forward was `P = softmax(S)`, so dS = P * (dP - rowsum(dP * P)); S was raw / divisor (the
    // mask is a constant), so d raw = dS / divisor.
    for (int64_t i = 0; i < p.n; ++i) {
      const float* p_row = probs.data() + i * p.m;
      float* ds_row = ds.data() + i * p.m;
      float row_dot = 0.0f;
      for (int64_t j = 0; j < p.m; ++j) row_dot += ds_row[j] * p_row[j];
      for (int64_t j = 0; j < p.m; ++j) ds_row[j] = p_row[j] * (ds_row[j] - row_dot) / p.divisor;
    }
    // forward was `raw = Q K^T`, so dQ = d raw K and dK = d raw^T Q.
    if (dq != nullptr) {
      gemm(Trans::no, Trans::no, p.n, p.d, p.m, 1.0f, ds.data(), p.m, p.k_of(b), p.d, 0.0f,
                 dq + b * p.n * p.d, p.d);
    }
    if (dk != nullptr) {
      gemm(Trans::yes, Trans::no, p.m, p.d, p.n, 1.0f, ds.data(), p.m, p.q + b * p.n * p.d,
                 p.d, beta, dk + kv * p.m * p.d, p.d);
    }
  }
}

void attention_probabilities(const AttentionProblem& p, float* probs) {
  for (int64_t b = 0; b < p.batch; ++b) probabilities(p, b, probs + b * p.n * p.m);
}

}  // namespace reference

void softmax_rows_inplace(TensorView scores) {
  const int64_t rows = scores.size(0);
  const int64_t cols = scores.size(1);
  for (int64_t i = 0; i < rows; ++i) {
    float* row = scores.data() + i * cols;
    float row_max = -std::numeric_limits<float>::infinity();
    bool row_has_nan = false;
    for (int64_t j = 0; j < cols; ++j) {
      row_max = row[j] > row_max ? row[j] : row_max;
      row_has_nan |= std::isnan(row[j]);
    }
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

}  // namespace llm_utils
