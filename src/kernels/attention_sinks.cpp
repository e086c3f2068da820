// The sinks' gradient (attention_dispatch.hpp). The forward added exp(sink_h) to each row's
// softmax denominator with no value, so with P_sink = exp(sink_h - lse_i) and
// D_i = dout_i . out_i (= rowsum(dP * P), as in the backward):
//   d sink_h = sum_i P_sink_i * (0 - D_i) = -sum_i exp(sink_h - lse_i) * D_i,
// summed over every row i of every query head g with g % H = h.

#include <cmath>
#include <vector>

#include "kernels/attention_dispatch.hpp"

namespace llm_utils::detail {

namespace {

template <typename T>
void sink_gradients_of(const AttentionShape& p, Strided<const T> out, Strided<const float> lse,
                       Strided<const T> dout, float* dsinks) {
  std::vector<double> sums(static_cast<size_t>(p.heads), 0.0);  // (H), in double: N B terms
  for (int64_t g = 0; g < p.query_heads(); ++g) {
    const float sink = p.sinks[g % p.heads];
    const float* lse_g = p.query_matrix(lse, g);  // (N), elements lse.row_stride apart
    for (int64_t i = 0; i < p.n; ++i) {
      const float row_lse = lse_g[i * lse.row_stride];
      if (row_lse == -INFINITY) continue;  // a -inf sink and no visible key: P_sink = 0
      const T* o = p.query_matrix(out, g) + i * out.row_stride;    // (dv)
      const T* d = p.query_matrix(dout, g) + i * dout.row_stride;  // (dv)
      float dot = 0.0f;
      for (int64_t c = 0; c < p.dv; ++c) dot += static_cast<float>(d[c]) * static_cast<float>(o[c]);
      sums[static_cast<size_t>(g % p.heads)] -= std::exp(sink - row_lse) * dot;
    }
  }
  for (int64_t h = 0; h < p.heads; ++h) {
    dsinks[h] = static_cast<float>(sums[static_cast<size_t>(h)]);
  }
}

}  // namespace

void sink_gradients(const AttentionShape& p, Strided<const float> out, Strided<const float> lse,
                    Strided<const float> dout, float* dsinks) {
  sink_gradients_of(p, out, lse, dout, dsinks);
}

void sink_gradients(const AttentionShape& p, Strided<const bfloat16> out, Strided<const float> lse,
                    Strided<const bfloat16> dout, float* dsinks) {
  sink_gradients_of(p, out, lse, dout, dsinks);
}

}  // namespace llm_utils::detail
