// The reference attention, one batch element at a time, following the original's operation
// order: raw = Q K^T, S = raw / divisor (then the softcap, ALiBi, the mask and the key range of
// attention_problem.hpp), P = softmax(S) with the row max subtracted (and the sink in the
// denominator), O = P V.

#include "llm_utils/attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "llm_utils/error.hpp"
#include "reference/attention_reference.hpp"
#include "reference/plain_gemm.hpp"

namespace llm_utils {
namespace reference {
namespace {

using detail::Trans;
constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// scores (N, M) = Q_g K_g^T / divisor, capped, biased and masked, with hidden keys at -inf.
// With a softcap and `softcap_grad` (N, M), also d capped / d scaled = 1 - tanh^2 there.
void scores(const AttentionProblem& p, int64_t g, float* s, float* softcap_grad = nullptr) {
  gemm(Trans::no, Trans::yes, p.n, p.m, p.d, 1.0f, p.q_of(g), p.q.row_stride, p.k_of(g),
       p.k.row_stride, 0.0f, s, p.m);
  const float* mask = p.mask != nullptr ? p.mask_of(g) : nullptr;
  const float slope = p.alibi_slopes != nullptr ? p.alibi_slopes[g % p.heads] : 0.0f;
  for (int64_t i = 0; i < p.n; ++i) {
    const detail::AttentionShape::KeyRange range = p.key_range(i);
    for (int64_t j = 0; j < p.m; ++j) {
      float& x = s[i * p.m + j];
      x /= p.divisor;
      if (p.softcap != 0.0f) {
        const float t = std::tanh(x / p.softcap);
        x = p.softcap * t;
        if (softcap_grad != nullptr) softcap_grad[i * p.m + j] = 1.0f - t * t;
      }
      if (slope != 0.0f) x -= slope * static_cast<float>(std::abs(range.pos - j));
      if (mask != nullptr) x += mask[p.mask_index(i, j)];
      if (j < range.begin || j >= range.end) x = kMinusInf;
    }
  }
}

// The softmax of one row in place, as softmax_rows_inplace computes it, with the sink logit in
// the denominator when `sink` is not null. Returns the row's log-sum-exp (over the sink too).
// NaN anywhere makes the row NaN; no visible key (and no sink) gives zeros and -inf.
float softmax_row(float* row, int64_t m, const float* sink) {
  float row_max = sink != nullptr ? *sink : kMinusInf;
  bool nan = false;
  for (int64_t j = 0; j < m; ++j) {
    row_max = row[j] > row_max ? row[j] : row_max;
    nan |= std::isnan(row[j]);
  }
  if (nan || row_max == kMinusInf) {
    const float fill = nan ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
    std::fill(row, row + m, fill);
    return nan ? fill : kMinusInf;
  }
  float sum = sink != nullptr ? std::exp(*sink - row_max) : 0.0f;
  for (int64_t j = 0; j < m; ++j) {
    row[j] = std::exp(row[j] - row_max);
    sum += row[j];
  }
  const float inv_sum = 1.0f / sum;
  for (int64_t j = 0; j < m; ++j) row[j] *= inv_sum;
  return row_max + std::log(sum);
}

const float* sink_of(const AttentionProblem& p, int64_t g) {
  return p.sinks != nullptr ? p.sinks + g % p.heads : nullptr;
}

// P (N, M) recomputed exactly as the forward computed it (the scores, then the softmax with
// the row max subtracted), so the backward sees the same bits PyTorch's autograd saves. Using
// exp(S - lse) instead would differ in the last bits, which saturated softmax rows amplify.
void probabilities(const AttentionProblem& p, int64_t g, float* s, float* softcap_grad = nullptr) {
  scores(p, g, s, softcap_grad);
  for (int64_t i = 0; i < p.n; ++i) softmax_row(s + i * p.m, p.m, sink_of(p, g));
}

// Sets the (rows, cols) matrix at `c` (rows `ld` apart) to zero.
void zero_matrix(float* c, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) std::fill(c + r * ld, c + r * ld + cols, 0.0f);
}

}  // namespace

void attention_forward(const AttentionProblem& p, const ForwardOutputs& o) {
  std::vector<float> s(static_cast<size_t>(p.n * p.m));  // (N, M) scores, then P
  for (int64_t g = 0; g < p.query_heads(); ++g) {
    scores(p, g, s.data());
    float* lse = p.query_matrix(o.lse, g);  // (N), elements o.lse.row_stride apart
    // lse_i = max + log(sum exp(S - max)), the sink in the sum.
    for (int64_t i = 0; i < p.n; ++i) {
      lse[i * o.lse.row_stride] = softmax_row(s.data() + i * p.m, p.m, sink_of(p, g));
    }
    // out (N, dv) = P V (k = M = 0 sets it to zero)
    gemm(Trans::no, Trans::no, p.n, p.dv, p.m, 1.0f, s.data(), p.m, p.v_of(g), p.v.row_stride, 0.0f,
         p.query_matrix(o.out, g), o.out.row_stride);
  }
}

void attention_backward(const AttentionProblem& p, const BackwardTensors& t) {
  // Keys no query attends to (none at all when there is no query head) get zero gradients; the
  // loop below overwrites them otherwise.
  if (p.no_queries()) {
    for (int64_t kv = 0; kv < p.kv_count(); ++kv) {
      zero_matrix(p.kv_matrix(t.dv, kv), p.m, p.dv, t.dv.row_stride);
      if (t.dk.data != nullptr) zero_matrix(p.kv_matrix(t.dk, kv), p.m, p.d, t.dk.row_stride);
    }
    return;
  }
  std::vector<float> probs(static_cast<size_t>(p.n * p.m));  // (N, M) P
  std::vector<float> ds(static_cast<size_t>(p.n * p.m));     // (N, M) dP, then dS
  // (N, M) d capped / d scaled score, with a softcap
  std::vector<float> softcap_grad(p.softcap != 0.0f ? probs.size() : 0);
  float* cap_grad = p.softcap != 0.0f ? softcap_grad.data() : nullptr;
  for (int64_t g = 0; g < p.query_heads(); ++g) {
    probabilities(p, g, probs.data(), cap_grad);
    const float* dout_g = p.query_matrix(t.dout, g);  // (N, dv), rows dout.row_stride apart
    const int64_t do_rs = t.dout.row_stride;
    // The kv_group query heads of one key/value head add up their dK and dV: the first one
    // overwrites, the rest accumulate (beta = 1).
    const int64_t kv = p.kv_of(g);
    const float beta = g == p.first_query_head(kv) ? 0.0f : 1.0f;
    // forward was `out = P V`, so dV = P^T dout ...
    gemm(Trans::yes, Trans::no, p.m, p.dv, p.n, 1.0f, probs.data(), p.m, dout_g, do_rs, beta,
         p.kv_matrix(t.dv, kv), t.dv.row_stride);
    if (t.dq.data == nullptr && t.dk.data == nullptr) continue;
    // ... and dP (N, M) = dout V^T.
    gemm(Trans::no, Trans::yes, p.n, p.m, p.dv, 1.0f, dout_g, do_rs, p.v_of(g), p.v.row_stride,
         0.0f, ds.data(), p.m);
    // forward was `P = softmax(S)`, so dS = P * (dP - rowsum(dP * P)) (a sink has no value,
    // so it adds no term to the row sum); S was cap * tanh((raw / divisor) / cap) (ALiBi and
    // the mask are constants), so d raw = dS * (1 - tanh^2) / divisor.
    for (int64_t i = 0; i < p.n; ++i) {
      const float* p_row = probs.data() + i * p.m;
      float* ds_row = ds.data() + i * p.m;
      float row_dot = 0.0f;
      for (int64_t j = 0; j < p.m; ++j) row_dot += ds_row[j] * p_row[j];
      for (int64_t j = 0; j < p.m; ++j) ds_row[j] = p_row[j] * (ds_row[j] - row_dot) / p.divisor;
      if (cap_grad != nullptr) {
        for (int64_t j = 0; j < p.m; ++j) ds_row[j] *= cap_grad[i * p.m + j];
      }
    }
    // forward was `raw = Q K^T`, so dQ = d raw K and dK = d raw^T Q.
    if (t.dq.data != nullptr) {
      gemm(Trans::no, Trans::no, p.n, p.d, p.m, 1.0f, ds.data(), p.m, p.k_of(g), p.k.row_stride,
           0.0f, p.query_matrix(t.dq, g), t.dq.row_stride);
    }
    if (t.dk.data != nullptr) {
      gemm(Trans::yes, Trans::no, p.m, p.d, p.n, 1.0f, ds.data(), p.m, p.q_of(g), p.q.row_stride,
           beta, p.kv_matrix(t.dk, kv), t.dk.row_stride);
    }
  }
}

void attention_probabilities(const AttentionProblem& p, Strided<float> probs) {
  std::vector<float> s(static_cast<size_t>(p.n * p.m));  // (N, M)
  for (int64_t g = 0; g < p.query_heads(); ++g) {
    probabilities(p, g, s.data());
    float* out = p.query_matrix(probs, g);
    for (int64_t i = 0; i < p.n; ++i) {
      std::copy(s.data() + i * p.m, s.data() + (i + 1) * p.m, out + i * probs.row_stride);
    }
  }
}

}  // namespace reference

void softmax_rows_inplace(TensorView scores) {
  if (scores.dim() != 2 || (scores.size(1) > 1 && scores.stride(1) != 1)) {
    throw ArgumentError(
        "softmax_rows_inplace: scores must be a (rows, cols) matrix with "
        "contiguous rows, got shape " +
        shape_to_string(scores.shape()) + " and strides " + shape_to_string(scores.strides()));
  }
  const int64_t rows = scores.size(0);
  const int64_t cols = scores.size(1);
  const int64_t ld = scores.stride(0);
  for (int64_t i = 0; i < rows; ++i) {
    float* row = scores.data() + i * ld;
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
