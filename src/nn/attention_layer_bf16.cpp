// AttentionLayer in bfloat16 (attention_layer.hpp): the projection on rounded x and weights, the
// bfloat16 kernels on qkv's heads in place, and their backward.

#include <algorithm>
#include <utility>

#include "kernels/attention_dispatch.hpp"
#include "kernels/gemm.hpp"
#include "nn/attention_layer.hpp"

namespace llm_utils::detail {

using kernels::Trans;

namespace {

void ensure_shape(BFloat16Tensor& t, const Shape& shape) {
  if (t.shape() != shape) t = BFloat16Tensor(shape);
}
void ensure_shape(Tensor& t, const Shape& shape) {
  if (t.shape() != shape) t = Tensor(shape);
}

}  // namespace

void AttentionLayer::widen_qkv() const {
  if (!bf16_ || qkv_widened_) return;
  qkv_ = qkv_bf16_.to_float();
  qkv_widened_ = true;
}

void AttentionLayer::forward_bf16(ConstTensorView x, const QkvWeights& w) {
  const LayerShape& s = shape_;
  const int64_t rows = batch_ * seq_, width = s.qkv_width(), hd = s.head_dim;
  qkv_widened_ = false;
  context_widened_ = false;
  x_ = Tensor();  // the float32 forward's; the backward reads x_bf16_
  ensure_shape(x_bf16_, {rows, s.d_in});
  kernels::round_to_bf16(x.data(), rows * s.d_in, x_bf16_.data());
  pack(w);
  ensure_shape(weight_bf16_, packed_weight_.shape());
  kernels::round_to_bf16(packed_weight_.data(), packed_weight_.numel(), weight_bf16_.data());
  // qkv (rows, W) = x W_packed^T + b (Linear layout) or x @ W_packed, accumulated in float32,
  // rounded once.
  ensure_shape(qkv_bf16_, {rows, width});
  kernels::gemm_bf16_rounded(
      Trans::no, w.linear_layout ? Trans::yes : Trans::no, rows, width, s.d_in, x_bf16_.data(),
      s.d_in, weight_bf16_.data(), w.linear_layout ? s.d_in : width,
      packed_bias_.empty() ? nullptr : packed_bias_.data(), qkv_bf16_.data(), width);
  rotate_qk(qkv_bf16_.data(), false);  // RoPE, rounded once more

  ensure_shape(context_bf16_, {rows, s.heads * hd});
  ensure_shape(lse_, {batch_, s.heads, seq_});
  if (call_.dropout > 0.0) {
    // The dropout path materialises P in float32: on the rounded q, k, v widened, its context
    // rounded.
    widen_qkv();
    ensure_shape(context_, {rows, s.heads * hd});
    forward_with_dropout(problem());
    kernels::round_to_bf16(context_.data(), rows * s.heads * hd, context_bf16_.data());
    return;
  }
  ensure_shape(row_max_, {batch_ * s.heads, seq_});
  ensure_shape(log_sum_, {batch_ * s.heads, seq_});
  backend_used_ = attention_forward(
      problem_over<bfloat16>(qkv_bf16_.data()), call_.backend,
      BasicForwardOutputs<bfloat16>{heads_view(context_bf16_.data(), seq_, s.heads * hd, 0, hd),
                                    Strided<float>::contiguous(lse_.data(), s.heads, seq_, 1),
                                    {row_max_.data(), log_sum_.data()}});
  have_row_stats_ = backend_used_ == Backend::flash;
}

Tensor AttentionLayer::backward_bf16(ConstTensorView dcontext, const QkvWeights& w,
                                     bool through_qk) {
  const LayerShape& s = shape_;
  const int64_t rows = batch_ * seq_, width = s.qkv_width(), hd = s.head_dim;
  const int64_t ctx_width = s.heads * hd;
  const int64_t v0 = (s.heads + s.kv_heads) * hd;  // first value column of qkv
  BFloat16Tensor dqkv({rows, width});              // (B*N, W): dq | dk | dv
  if (!keep_.empty()) {
    // forward_bf16's dropout path, in float32 on the widened q, k, v; dqkv rounded.
    Tensor dqkv32({rows, width});
    BackwardTensors t;
    t.out = heads_view(context().data(), seq_, ctx_width, 0, hd);
    t.dout = heads_view(dcontext.data(), seq_, ctx_width, 0, hd);
    if (through_qk) {
      t.dq = heads_view(dqkv32.data(), seq_, width, 0, hd);
      t.dk = heads_view(dqkv32.data(), seq_, width, s.heads * hd, hd);
    }
    t.dv = heads_view(dqkv32.data(), seq_, width, v0, hd);
    widen_qkv();
    backward_with_dropout(problem(), t);
    kernels::round_to_bf16(dqkv32.data(), rows * width, dqkv.data());
  } else {
    BFloat16Tensor dcontext_bf16({rows, ctx_width});  // (B*N, H*hd) rounded
    kernels::round_to_bf16(dcontext.data(), rows * ctx_width, dcontext_bf16.data());
    BasicBackwardTensors<bfloat16> t;
    t.out = heads_view(std::as_const(context_bf16_).data(), seq_, ctx_width, 0, hd);
    t.lse = Strided<const float>::contiguous(lse_.data(), s.heads, seq_, 1);
    t.stats = saved_row_stats(row_max_.data(), log_sum_.data(), have_row_stats_);
    t.dout = heads_view(std::as_const(dcontext_bf16).data(), seq_, ctx_width, 0, hd);
    if (through_qk) {
      t.dq = heads_view(dqkv.data(), seq_, width, 0, hd);
      t.dk = heads_view(dqkv.data(), seq_, width, s.heads * hd, hd);
    }
    t.dv = heads_view(dqkv.data(), seq_, width, v0, hd);
    attention_backward(problem_over<bfloat16>(qkv_bf16_.data()), backend_used_, t);
  }
  sink_backward(dcontext);
  // forward was `q, k = rope(...)`: dq and dk rotated back (and rounded once more).
  if (through_qk) rotate_qk(dqkv.data(), true);
  // forward was `qkv = x W^T + b`: only the value columns when q and k are constants.
  return projection_backward<bfloat16>(dqkv.data(), x_bf16_.data(), weight_bf16_.data(),
                                       through_qk ? 0 : v0, width, w);
}

}  // namespace llm_utils::detail
