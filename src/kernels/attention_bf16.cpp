// The bfloat16 problems' dispatch: the fused bfloat16 kernels, or the float32 reference on the
// widened inputs with its outputs rounded (attention_dispatch.hpp).

#include <vector>

#include "cpu/bf16_microkernels.hpp"
#include "cpu/flash_attention.hpp"
#include "kernels/attention_cuda.hpp"
#include "kernels/attention_dispatch.hpp"
#include "reference/attention_reference.hpp"

namespace llm_utils::detail {
namespace {

// A (batch, heads, rows, cols) bfloat16 array widened to a contiguous float32 one.
struct Widened {
  Widened(const Strided<const bfloat16>& src, int64_t batch, int64_t heads, int64_t rows,
          int64_t cols)
      : heads(heads),
        rows(rows),
        cols(cols),
        data(static_cast<size_t>(batch * heads * rows * cols)) {
    if (src.data == nullptr) return;
    const cpu::Bf16Microkernels& mk = cpu::bf16_microkernels();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t r = 0; r < rows; ++r) mk.widen(src.row(b, h, r), cols, row(b, h, r));
      }
    }
  }
  float* row(int64_t b, int64_t h, int64_t r) {
    return data.data() + ((b * heads + h) * rows + r) * cols;
  }
  Strided<float> strided() { return Strided<float>::contiguous(data.data(), heads, rows, cols); }

  int64_t heads, rows, cols;
  std::vector<float> data;  // (batch, heads, rows, cols)
};

// The same sizes for an output: zeros.
Widened zeros(int64_t batch, int64_t heads, int64_t rows, int64_t cols) {
  return Widened(Strided<const bfloat16>{}, batch, heads, rows, cols);
}

// Rounds a float32 array into a strided bfloat16 one of the same sizes.
void round_into(Widened& src, int64_t batch, const Strided<bfloat16>& dst) {
  const cpu::Bf16Microkernels& mk = cpu::bf16_microkernels();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < src.heads; ++h) {
      for (int64_t r = 0; r < src.rows; ++r) mk.round(src.row(b, h, r), src.cols, dst.row(b, h, r));
    }
  }
}

AttentionProblem widened_problem(const Bf16AttentionProblem& p, Widened& q, Widened& k,
                                 Widened& v) {
  AttentionProblem wide;
  static_cast<AttentionShape&>(wide) = p;
  wide.q = q.strided().as_const();
  wide.k = k.strided().as_const();
  wide.v = v.strided().as_const();
  return wide;
}

}  // namespace

Backend attention_forward(const Bf16AttentionProblem& p, Backend backend,
                          const BasicForwardOutputs<bfloat16>& o) {
  if (resolve_backend(p, backend) == Backend::flash) {
    cpu::flash_forward(p, o);
    return Backend::flash;
  }
  if (backend == Backend::cuda) {
    cuda_attention_forward(p, o);
    return Backend::cuda;
  }
  Widened q(p.q, p.batch, p.heads, p.n, p.d), k(p.k, p.batch, p.kv_heads, p.m, p.d);
  Widened v(p.v, p.batch, p.kv_heads, p.m, p.dv);
  Widened out = zeros(p.batch, p.heads, p.n, p.dv);
  reference::attention_forward(widened_problem(p, q, k, v), {out.strided(), o.lse, {}});
  round_into(out, p.batch, o.out);
  return Backend::reference;
}

void attention_backward(const Bf16AttentionProblem& p, Backend backend,
                        const BasicBackwardTensors<bfloat16>& t) {
  if (resolve_backend(p, backend) == Backend::flash) {
    cpu::flash_backward(p, t);
    return;
  }
  if (backend == Backend::cuda) {
    cuda_attention_backward(p, t);
    return;
  }
  Widened q(p.q, p.batch, p.heads, p.n, p.d), k(p.k, p.batch, p.kv_heads, p.m, p.d);
  Widened v(p.v, p.batch, p.kv_heads, p.m, p.dv);
  Widened out(t.out, p.batch, p.heads, p.n, p.dv), dout(t.dout, p.batch, p.heads, p.n, p.dv);
  Widened dq = zeros(p.batch, p.heads, t.dq.data != nullptr ? p.n : 0, p.d);
  Widened dk = zeros(p.batch, p.kv_heads, t.dk.data != nullptr ? p.m : 0, p.d);
  Widened dv = zeros(p.batch, p.kv_heads, p.m, p.dv);
  BackwardTensors wide;
  wide.out = out.strided().as_const();
  wide.lse = t.lse;
  wide.dout = dout.strided().as_const();
  wide.dv = dv.strided();
  if (t.dq.data != nullptr) wide.dq = dq.strided();
  if (t.dk.data != nullptr) wide.dk = dk.strided();
  reference::attention_backward(widened_problem(p, q, k, v), wide);
  round_into(dv, p.batch, t.dv);
  if (t.dq.data != nullptr) round_into(dq, p.batch, t.dq);
  if (t.dk.data != nullptr) round_into(dk, p.batch, t.dk);
}

void attention_probabilities(const Bf16AttentionProblem& p, Backend backend,
                             Strided<const float> lse, RowStats stats, Strided<float> probs) {
  // The weights of a CUDA forward are recomputed on the CPU from its lse.
  if (resolve_backend(p, backend) == Backend::flash || backend == Backend::cuda) {
    cpu::flash_probabilities(p, lse, stats, probs);
    return;
  }
  Widened q(p.q, p.batch, p.heads, p.n, p.d), k(p.k, p.batch, p.kv_heads, p.m, p.d);
  Widened no_values = zeros(p.batch, p.kv_heads, p.m, 0);
  reference::attention_probabilities(widened_problem(p, q, k, no_values), probs);
}

}  // namespace llm_utils::detail
