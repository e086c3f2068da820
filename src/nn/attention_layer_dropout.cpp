// AttentionLayer's dropout path (training mode, p > 0): the attention weights are materialised
// by the reference kernel, dropped as nn.Dropout does, and multiplied by V one head at a time;
// the backward differentiates through the same multipliers.

#include "kernels/attention_dispatch.hpp"
#include "kernels/gemm.hpp"
#include "nn/attention_layer.hpp"

namespace llm_utils::detail {

using kernels::Trans;

void AttentionLayer::forward_with_dropout(const AttentionProblem& p) {
  const int64_t g = p.query_heads(), n = p.n, m = p.m, hd = p.dv;
  const int64_t ld_out = shape_.heads * hd;  // context rows
  // The weights must exist to be dropped: the reference kernel materialises them anyway.
  backend_used_ = Backend::reference;
  have_row_stats_ = false;
  probs_ = Tensor({g, n, m});  // (B*H, N, M)
  attention_probabilities(p, backend_used_, {}, {},
                          Strided<float>::contiguous(probs_.data(), p.heads, n, m));
  // nn.Dropout: keep with probability 1 - p, scale kept weights by 1 / (1 - p) (in float, as
  // PyTorch). One draw per weight, masked ones included, so the stream is easy to state.
  keep_ = Tensor({g, n, m});  // (B*H, N, M)
  Generator& generator = call_.generator != nullptr ? *call_.generator : default_generator();
  const double keep_p = 1.0 - call_.dropout;
  const float scale = 1.0f / static_cast<float>(keep_p);
  for (float& w : keep_) {
    const double u = static_cast<double>(generator.next_u32() & 0xFFFFFFu) * 0x1.0p-24;
    w = u < keep_p ? scale : 0.0f;
  }
  Tensor dropped({n, m});  // (N, M) P * keep of one head
  const Strided<float> out = heads_view(context_.data(), seq_, ld_out, 0, hd);
  for (int64_t h = 0; h < g; ++h) {
    const float* probs = probs_.data() + h * n * m;
    const float* keep = keep_.data() + h * n * m;
    for (int64_t i = 0; i < n * m; ++i) dropped[i] = probs[i] * keep[i];
    // out (N, hd) = dropped (N, M) V (M, hd)
    kernels::gemm(Trans::no, Trans::no, n, hd, m, 1.0f, dropped.data(), m, p.v_of(h),
                  p.v.row_stride, 0.0f, p.query_matrix(out, h), out.row_stride);
  }
}

void AttentionLayer::backward_with_dropout(const AttentionProblem& p,
                                           const BackwardTensors& t) const {
  const int64_t g = p.query_heads(), n = p.n, m = p.m, hd = p.dv;
  Tensor dropped({n, m});  // (N, M) P * keep of one head
  Tensor dp({n, m});       // (N, M) dL/dP, then dL/dS
  for (int64_t h = 0; h < g; ++h) {
    const float* probs = probs_.data() + h * n * m;
    const float* keep = keep_.data() + h * n * m;
    const float* dout = p.query_matrix(t.dout, h);  // (N, hd), rows t.dout.row_stride apart
    // The kv_group heads sharing keys and values add up their dK and dV.
    const int64_t kv = p.kv_of(h);
    const float beta = h == p.first_query_head(kv) ? 0.0f : 1.0f;
    for (int64_t i = 0; i < n * m; ++i) dropped[i] = probs[i] * keep[i];
    // forward `out = dropped V`: dV (M, hd) += dropped^T dO, d(dropped) (N, M) = dO V^T.
    kernels::gemm(Trans::yes, Trans::no, m, hd, n, 1.0f, dropped.data(), m, dout, t.dout.row_stride,
                  beta, p.kv_matrix(t.dv, kv), t.dv.row_stride);
    if (t.dq.data == nullptr && t.dk.data == nullptr) continue;
    kernels::gemm(Trans::no, Trans::yes, n, m, hd, 1.0f, dout, t.dout.row_stride, p.v_of(h),
                  p.v.row_stride, 0.0f, dp.data(), m);
    // forward `dropped = P * keep`, then `P = softmax(S)` row-wise with S = Q K^T / divisor
    // (+ mask): dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik) / divisor. Hidden keys have P = 0.
    for (int64_t i = 0; i < n; ++i) {
      float* row = dp.data() + i * m;
      double dot = 0.0;
      for (int64_t j = 0; j < m; ++j) {
        row[j] *= keep[i * m + j];
        dot += static_cast<double>(row[j]) * probs[i * m + j];
      }
      for (int64_t j = 0; j < m; ++j) {
        row[j] = probs[i * m + j] * (row[j] - static_cast<float>(dot)) / p.divisor;
      }
    }
    // forward `S = Q K^T / divisor`: dQ = dS K, dK += dS^T Q (the divisor already in dS).
    if (t.dq.data != nullptr) {
      kernels::gemm(Trans::no, Trans::no, n, hd, m, 1.0f, dp.data(), m, p.k_of(h), p.k.row_stride,
                    0.0f, p.query_matrix(t.dq, h), t.dq.row_stride);
    }
    if (t.dk.data != nullptr) {
      kernels::gemm(Trans::yes, Trans::no, m, hd, n, 1.0f, dp.data(), m, p.q_of(h), p.q.row_stride,
                    beta, p.kv_matrix(t.dk, kv), t.dk.row_stride);
    }
  }
}

}  // namespace llm_utils::detail
