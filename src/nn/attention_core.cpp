// The attention core of the causal and multi-head modules: the fused / reference kernels when
// no dropout runs, and a materialised path with an explicit dropout mask when one does. Heads
// may share keys and values (grouped-query attention) and a broadcast additive mask may apply.

#include <cmath>

#include "kernels/attention_dispatch.hpp"
#include "kernels/gemm.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/nn/causal_attention.hpp"
#include "nn/broadcast_mask.hpp"

namespace llm_utils::detail {

using kernels::Trans;

AttentionProblem AttentionCore::problem() const {
  const int64_t g = q_.size(0), n = q_.size(1), hd = q_.size(2), m = k_.size(1);
  AttentionOptions kernel_options;
  kernel_options.causal = options_.causal;
  kernel_options.query_offset = options_.query_offset;
  kernel_options.scale_divisor = options_.scale_divisor;
  const int64_t kv = g / options_.kv_group;
  AttentionProblem p =
      make_attention_problem(Strided<const float>::contiguous(q_.data(), g, n, hd),
                             Strided<const float>::contiguous(k_.data(), kv, m, hd),
                             Strided<const float>::contiguous(v_.data(), kv, m, hd), 1, g, kv, n, m,
                             hd, hd, kernel_options);
  apply_mask(options_.mask, options_.heads, p);
  return p;
}

Tensor AttentionCore::forward(Tensor q, Tensor k, Tensor v, CoreOptions options, double dropout,
                              Backend backend, Generator& generator) {
  const int64_t g = q.size(0), n = q.size(1), hd = q.size(2);
  options_ = std::move(options);
  backend_ = backend;
  q_ = std::move(q);
  k_ = std::move(k);
  v_ = std::move(v);
  out_ = Tensor({g, n, hd});
  lse_ = Tensor({g, n});
  probs_ = Tensor();
  keep_ = Tensor();
  if (dropout > 0.0) {
    forward_with_dropout(dropout, generator);
    return out_;
  }
  row_max_ = Tensor({g, n});
  log_sum_ = Tensor({g, n});
  have_row_stats_ = attention_forward(problem(), backend_,
                                      {Strided<float>::contiguous(out_.data(), g, n, hd),
                                       Strided<float>::contiguous(lse_.data(), g, n, 1),
                                       {row_max_.data(), log_sum_.data()}}) == Backend::flash;
  return out_;
}

void AttentionCore::forward_with_dropout(double dropout, Generator& generator) {
  const int64_t g = q_.size(0), n = q_.size(1), hd = q_.size(2), m = k_.size(1);
  const AttentionProblem p = problem();
  // The weights must exist to be dropped: the reference kernel materialises them anyway.
  backend_ = Backend::reference;
  have_row_stats_ = false;
  probs_ = Tensor({g, n, m});
  attention_probabilities(p, backend_, {}, {}, Strided<float>::contiguous(probs_.data(), g, n, m));
  // nn.Dropout: keep with probability 1 - p, scale kept weights by 1 / (1 - p) (in float, as
  // PyTorch). One draw per weight, masked ones included, so the stream is easy to state.
  keep_ = Tensor({g, n, m});
  const double keep_p = 1.0 - dropout;
  const float scale = 1.0f / static_cast<float>(keep_p);
  for (float& w : keep_) {
    const double u = static_cast<double>(generator.next_u32() & 0xFFFFFFu) * 0x1.0p-24;
    w = u < keep_p ? scale : 0.0f;
  }
  Tensor dropped = probs_;  // (G, N, M) P * keep
  for (int64_t i = 0; i < dropped.numel(); ++i) dropped[i] *= keep_[i];
  for (int64_t h = 0; h < g; ++h) {
    // out (N, hd) = dropped (N, M) V (M, hd)
    kernels::gemm(Trans::no, Trans::no, n, hd, m, 1.0f, dropped.data() + h * n * m, m, p.v_of(h),
                  hd, 0.0f, out_.data() + h * n * hd, hd);
  }
}

void AttentionCore::backward(ConstTensorView dout, Tensor& dq, Tensor& dk, Tensor& dv) const {
  dq = Tensor(q_.shape());
  dk = Tensor(k_.shape());
  dv = Tensor(v_.shape());
  if (!keep_.empty()) {
    backward_with_dropout(dout, dq, dk, dv);
    return;
  }
  const RowStats stats = saved_row_stats(row_max_.data(), log_sum_.data(), have_row_stats_);
  const int64_t g = q_.size(0), n = q_.size(1), hd = q_.size(2), m = k_.size(1);
  const int64_t kv = k_.size(0);
  BackwardTensors t;
  t.out = Strided<const float>::contiguous(out_.data(), g, n, hd);
  t.lse = Strided<const float>::contiguous(lse_.data(), g, n, 1);
  t.stats = stats;
  t.dout = Strided<const float>::contiguous(dout.data(), g, n, hd);
  t.dq = Strided<float>::contiguous(dq.data(), g, n, hd);
  t.dk = Strided<float>::contiguous(dk.data(), kv, m, hd);
  t.dv = Strided<float>::contiguous(dv.data(), kv, m, hd);
  attention_backward(problem(), backend_, t);
}

void AttentionCore::backward_with_dropout(ConstTensorView dout, Tensor& dq, Tensor& dk,
                                          Tensor& dv) const {
  const AttentionProblem p = problem();
  const int64_t g = q_.size(0), n = q_.size(1), hd = q_.size(2), m = k_.size(1);
  Tensor dropped({n, m});  // (N, M) P * keep of one head
  Tensor dp({n, m});       // (N, M) dL/dP, then dL/dS
  for (int64_t h = 0; h < g; ++h) {
    const float* probs = probs_.data() + h * n * m;
    const float* keep = keep_.data() + h * n * m;
    const float* q = q_.data() + h * n * hd;
    const float* dO = dout.data() + h * n * hd;
    // The kv_group heads sharing keys and values add up their dK and dV.
    const int64_t kv = p.kv_of(h);
    const float beta = h == p.first_query_head(kv) ? 0.0f : 1.0f;
    for (int64_t i = 0; i < n * m; ++i) dropped[i] = probs[i] * keep[i];
    // forward `out = dropped V`: dV (M, hd) += dropped^T dO, d(dropped) (N, M) = dO V^T.
    kernels::gemm(Trans::yes, Trans::no, m, hd, n, 1.0f, dropped.data(), m, dO, hd, beta,
                  dv.data() + kv * m * hd, hd);
    kernels::gemm(Trans::no, Trans::yes, n, m, hd, 1.0f, dO, hd, p.v_of(h), hd, 0.0f, dp.data(), m);
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
    kernels::gemm(Trans::no, Trans::no, n, hd, m, 1.0f, dp.data(), m, p.k_of(h), hd, 0.0f,
                  dq.data() + h * n * hd, hd);
    kernels::gemm(Trans::yes, Trans::no, m, hd, n, 1.0f, dp.data(), m, q, hd, beta,
                  dk.data() + kv * m * hd, hd);
  }
}

}  // namespace llm_utils::detail
