// The attention core of the causal modules: the fused / reference kernels with `causal` when no
// dropout runs, and a materialised path with an explicit dropout mask when one does.

#include <cmath>

#include "llm_utils/error.hpp"
#include "llm_utils/nn/causal_attention.hpp"
#include "reference/blas.hpp"

namespace llm_utils::detail {

using blas::Trans;

Tensor CausalAttentionCore::forward(Tensor q, Tensor k, Tensor v, double dropout, Backend backend,
                                    Generator& generator) {
  const int64_t g = q.size(0), n = q.size(1), hd = q.size(2);
  AttentionOptions options;
  options.causal = true;
  options.backend = backend;
  Tensor out({g, n, hd});  // (G, N, hd)
  Tensor lse({g, n});      // (G, N)
  Tensor probs, keep;      // (G, N, N) each, dropout path only
  if (dropout > 0.0) {
    // The weights must exist to be dropped: the reference kernel materialises them anyway.
    options.backend = Backend::reference;
    attention_forward(q, k, v, out, lse, options);
    probs = Tensor({g, n, n});
    attention_probabilities(q, k, lse, probs, options);
    // nn.Dropout: keep with probability 1 - p, scale kept weights by 1 / (1 - p) (in float,
    // as PyTorch). One draw per weight, masked ones included, so the stream is easy to state.
    keep = Tensor({g, n, n});
    const double keep_p = 1.0 - dropout;
    const float scale = 1.0f / static_cast<float>(keep_p);
    for (float& m : keep) {
      const double u = static_cast<double>(generator.next_u32() & 0xFFFFFFu) * 0x1.0p-24;
      m = u < keep_p ? scale : 0.0f;
    }
    Tensor dropped = probs;  // (G, N, N) P * keep
    for (int64_t i = 0; i < dropped.numel(); ++i) dropped[i] *= keep[i];
    for (int64_t h = 0; h < g; ++h) {
      // out (N, hd) = dropped (N, N) V (N, hd)
      blas::gemm(Trans::no, Trans::no, n, hd, n, 1.0f, dropped.data() + h * n * n, n,
                 v.data() + h * n * hd, hd, 0.0f, out.data() + h * n * hd, hd);
    }
  } else {
    attention_forward(q, k, v, out, lse, options);
  }
  options_ = options;
  q_ = std::move(q);
  k_ = std::move(k);
  v_ = std::move(v);
  lse_ = std::move(lse);
  probs_ = std::move(probs);
  keep_ = std::move(keep);
  out_ = out;
  return out;
}

void CausalAttentionCore::backward(ConstTensorView dout, Tensor& dq, Tensor& dk, Tensor& dv) const {
  const int64_t g = q_.size(0), n = q_.size(1), hd = q_.size(2);
  dq = Tensor({g, n, hd});
  dk = Tensor({g, n, hd});
  dv = Tensor({g, n, hd});
  if (keep_.empty()) {
    attention_backward(q_, k_, v_, out_, lse_, dout, dq, dk, dv, options_);
    return;
  }
  const float inv_scale = 1.0f / std::sqrt(static_cast<float>(hd));
  Tensor dropped({n, n});  // (N, N) P * keep of one head
  Tensor dp({n, n});       // (N, N) dL/dP, then dL/dS
  for (int64_t h = 0; h < g; ++h) {
    const float* p = probs_.data() + h * n * n;
    const float* keep = keep_.data() + h * n * n;
    const float* q = q_.data() + h * n * hd;
    const float* k = k_.data() + h * n * hd;
    const float* v = v_.data() + h * n * hd;
    const float* dO = dout.data() + h * n * hd;
    for (int64_t i = 0; i < n * n; ++i) dropped[i] = p[i] * keep[i];
    // forward `out = dropped V`: dV (N, hd) = dropped^T dO, d(dropped) (N, N) = dO V^T.
    blas::gemm(Trans::yes, Trans::no, n, hd, n, 1.0f, dropped.data(), n, dO, hd, 0.0f,
               dv.data() + h * n * hd, hd);
    blas::gemm(Trans::no, Trans::yes, n, n, hd, 1.0f, dO, hd, v, hd, 0.0f, dp.data(), n);
    // forward `dropped = P * keep`, then `P = softmax(S)` row-wise with S = Q K^T / sqrt(hd):
    // dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik) / sqrt(hd). Hidden keys have P = 0, so dS = 0.
    for (int64_t i = 0; i < n; ++i) {
      float* row = dp.data() + i * n;
      double dot = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        row[j] *= keep[i * n + j];
        dot += static_cast<double>(row[j]) * p[i * n + j];
      }
      for (int64_t j = 0; j < n; ++j) {
        row[j] = p[i * n + j] * (row[j] - static_cast<float>(dot)) * inv_scale;
      }
    }
    // forward `S = Q K^T / sqrt(hd)`: dQ = dS K, dK = dS^T Q (scale already in dS).
    blas::gemm(Trans::no, Trans::no, n, hd, n, 1.0f, dp.data(), n, k, hd, 0.0f,
               dq.data() + h * n * hd, hd);
    blas::gemm(Trans::yes, Trans::no, n, hd, n, 1.0f, dp.data(), n, q, hd, 0.0f,
               dk.data() + h * n * hd, hd);
  }
}

}  // namespace llm_utils::detail
