// AttentionLayer: packed projection, attention on the strided heads, and their backward.

#include "nn/attention_layer.hpp"

#include <algorithm>
#include <initializer_list>

#include "kernels/attention_cuda.hpp"
#include "kernels/attention_dispatch.hpp"
#include "kernels/gemm.hpp"
#include "kernels/rope.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::detail {

using kernels::Trans;

namespace {
// Gives t the shape, reusing its storage when it already has it: repeated forwards of the same
// size then allocate nothing here, not even the Shape (it shows on tiny inputs such as the
// book's example, whose forward takes under a microsecond).
void ensure_shape(Tensor& t, std::initializer_list<int64_t> shape) {
  if (!std::equal(t.shape().begin(), t.shape().end(), shape.begin(), shape.end())) {
    t = Tensor(Shape(shape));
  }
}

// From these sizes up the projections run as one GEMM against the packed weight, which reads x
// once instead of three times (with OpenBLAS, 2 threads: 13.2 -> 11.1 ms at 4096 rows, d_in 768,
// d_out 64; 25.7 -> 16.8 ms at 8192 rows; no gain at d_in 64). Below, one GEMM per projection,
// as the original's three nn.Linear calls: OpenBLAS's result for a row depends on where the
// row falls in its tiling, which depends on the GEMM's width, so equal tokens keep equal
// projections where PyTorch's do (which tests/test_numerics_hardening.cpp's exact ties at
// |x| = 1e4 rely on; oneDNN's kernels give equal rows either way).
constexpr int64_t kPackedMinDin = 256;
constexpr int64_t kPackedMinRows = 256;
}  // namespace

void AttentionLayer::check_weights(const QkvWeights& w) const {
  // A Linear's bias is an std::optional a caller can reset or emplace: check it still fits.
  const bool has_bias = w.bias[0] != nullptr;
  for (int i = 0; i < 3; ++i) {
    const Tensor& wi = w.weight[i]->tensor();
    const int64_t cols = w.linear_layout ? wi.size(0) : wi.size(1);
    if ((w.bias[i] != nullptr) != has_bias || (has_bias && w.bias[i]->shape() != Shape{cols})) {
      static const char* const names[3] = {"W_query", "W_key", "W_value"};
      throw ArgumentError(std::string("forward: ") + names[i] + ".bias must be " +
                          (has_bias ? "a (" + std::to_string(cols) + ") vector" : "absent") +
                          " like the other projections' biases");
    }
  }
}

void AttentionLayer::pack(const QkvWeights& w) {
  check_weights(w);
  const int64_t width = shape_.qkv_width(), d_in = shape_.d_in;
  if (w.linear_layout) {
    ensure_shape(packed_weight_, {width, d_in});
  } else {
    ensure_shape(packed_weight_, {d_in, width});
  }
  int64_t c0 = 0;  // first output column of this projection
  for (const ParameterRef* weight : w.weight) {
    const Tensor& m = weight->tensor();  // (cols, d_in) or (d_in, cols)
    const int64_t cols = w.linear_layout ? m.size(0) : m.size(1);
    if (w.linear_layout) {
      std::copy(m.data(), m.data() + cols * d_in, packed_weight_.data() + c0 * d_in);
    } else {
      for (int64_t i = 0; i < d_in; ++i) {
        std::copy(m.data() + i * cols, m.data() + (i + 1) * cols,
                  packed_weight_.data() + i * width + c0);
      }
    }
    c0 += cols;
  }
  const bool has_bias = w.bias[0] != nullptr;
  if (!has_bias) {
    packed_bias_ = Tensor();
    return;
  }
  ensure_shape(packed_bias_, {width});
  c0 = 0;
  for (const ParameterRef* bias : w.bias) {
    const Tensor& b = bias->tensor();  // (cols)
    std::copy(b.data(), b.data() + b.numel(), packed_bias_.data() + c0);
    c0 += b.numel();
  }
}

AttentionShape AttentionLayer::call_shape() const {
  const LayerShape& s = shape_;
  AttentionOptions options;
  options.causal = call_.causal;
  options.scale_divisor = call_.scale_divisor;
  AttentionShape p = make_attention_shape(batch_, s.heads, s.kv_heads, seq_, seq_, s.head_dim,
                                          s.head_dim, options);
  apply_mask(call_.mask, p);
  p.window_left = call_.window_left;
  p.softcap = call_.softcap;
  if (!call_.alibi_slopes.empty()) p.alibi_slopes = call_.alibi_slopes.data();
  if (!call_.sinks.empty()) p.sinks = call_.sinks.data();
  if (!call_.cu_seqlens.empty()) {
    p.seq_starts_q = call_.cu_seqlens.data();
    p.seq_starts_k = call_.cu_seqlens.data();
    p.sequences = static_cast<int64_t>(call_.cu_seqlens.size()) - 1;
  }
  return p;
}

template <typename T>
BasicAttentionProblem<T> AttentionLayer::problem_over(const T* qkv) const {
  const LayerShape& s = shape_;
  const int64_t width = s.qkv_width(), hd = s.head_dim;
  BasicAttentionProblem<T> p;
  static_cast<AttentionShape&>(p) = call_shape();
  p.q = heads_view(qkv, seq_, width, 0, hd);
  p.k = heads_view(qkv, seq_, width, s.heads * hd, hd);
  p.v = heads_view(qkv, seq_, width, (s.heads + s.kv_heads) * hd, hd);
  return p;
}
template Bf16AttentionProblem AttentionLayer::problem_over(const bfloat16* qkv) const;

AttentionProblem AttentionLayer::problem() const {
  return problem_over<float>(qkv_.data());
}

void AttentionLayer::forward(ConstTensorView x, int64_t batch, int64_t seq, const QkvWeights& w,
                             LayerCall call) {
  const LayerShape& s = shape_;
  const int64_t rows = batch * seq, width = s.qkv_width(), hd = s.head_dim;
  check_weights(w);  // before anything changes: a throw leaves the last forward as it was
  if (call.backend == Backend::cuda && call.executor == nullptr && call.dropout == 0.0) {
    cuda_check_available("forward",
                         call.window_left >= 0 || call.softcap != 0.0f ||
                             !call.alibi_slopes.empty() || !call.sinks.empty() ||
                             !call.cu_seqlens.empty(),
                         s.head_dim);
  }
  batch_ = batch;
  seq_ = seq;
  call_ = std::move(call);
  weights_.reset();
  bf16_ = call_.bf16;
  if (!probs_.empty()) probs_ = Tensor();
  if (!keep_.empty()) keep_ = Tensor();
  set_positions();
  if (bf16_) {
    forward_bf16(x, w);
    return;
  }
  ensure_shape(x_, {rows, s.d_in});
  std::copy(x.data(), x.data() + rows * s.d_in, x_.data());
  pack(w);
  // qkv (rows, W) = x (rows, d_in) W_packed^T + b (Linear layout), or x @ W_packed.
  ensure_shape(qkv_, {rows, width});
  const bool bias = !packed_bias_.empty();
  if (bias) {
    for (int64_t r = 0; r < rows; ++r) {
      std::copy(packed_bias_.begin(), packed_bias_.end(), qkv_.data() + r * width);
    }
  }
  const Trans trans_w = w.linear_layout ? Trans::yes : Trans::no;
  if (s.d_in >= kPackedMinDin && rows >= kPackedMinRows) {
    kernels::gemm(Trans::no, trans_w, rows, width, s.d_in, 1.0f, x_.data(), s.d_in,
                  packed_weight_.data(), w.linear_layout ? s.d_in : width, bias ? 1.0f : 0.0f,
                  qkv_.data(), width);
  } else {
    // One GEMM per projection into its columns of qkv, each over the parameter itself.
    int64_t c0 = 0;
    for (const ParameterRef* weight : w.weight) {
      const Tensor& m = weight->tensor();  // (cols, d_in) or (d_in, cols)
      const int64_t cols = w.linear_layout ? m.size(0) : m.size(1);
      kernels::gemm(Trans::no, trans_w, rows, cols, s.d_in, 1.0f, x_.data(), s.d_in, m.data(),
                    w.linear_layout ? s.d_in : cols, bias ? 1.0f : 0.0f, qkv_.data() + c0, width);
      c0 += cols;
    }
  }
  rotate_qk(qkv_.data(), false);

  ensure_shape(context_, {rows, s.heads * hd});
  ensure_shape(lse_, {batch, s.heads, seq});
  if (call_.executor != nullptr) {
    forward_with_executor();
    return;
  }
  const AttentionProblem p = problem();
  if (call_.dropout > 0.0) {
    forward_with_dropout(p);
    return;
  }
  ensure_shape(row_max_, {batch * s.heads, seq});
  ensure_shape(log_sum_, {batch * s.heads, seq});
  backend_used_ = attention_forward(p, call_.backend,
                                    {heads_view(context_.data(), seq, s.heads * hd, 0, hd),
                                     Strided<float>::contiguous(lse_.data(), s.heads, seq, 1),
                                     {row_max_.data(), log_sum_.data()}});
  have_row_stats_ = backend_used_ == Backend::flash;
}

Tensor AttentionLayer::backward(ConstTensorView dcontext, const QkvWeights& w, bool through_qk) {
  if (bf16_) return backward_bf16(dcontext, w, through_qk);
  const LayerShape& s = shape_;
  const int64_t rows = batch_ * seq_, width = s.qkv_width(), hd = s.head_dim;
  const int64_t v0 = (s.heads + s.kv_heads) * hd;  // first value column of qkv
  Tensor dqkv({rows, width});                      // (B*N, W): dq | dk | dv
  BackwardTensors t;
  t.out = heads_view(context_.data(), seq_, s.heads * hd, 0, hd).as_const();
  t.lse = Strided<const float>::contiguous(lse_.data(), s.heads, seq_, 1);
  t.stats = saved_row_stats(row_max_.data(), log_sum_.data(), have_row_stats_);
  t.dout = heads_view(dcontext.data(), seq_, s.heads * hd, 0, hd);
  if (through_qk) {
    t.dq = heads_view(dqkv.data(), seq_, width, 0, hd);
    t.dk = heads_view(dqkv.data(), seq_, width, s.heads * hd, hd);
  }
  t.dv = heads_view(dqkv.data(), seq_, width, v0, hd);
  if (call_.executor != nullptr) {
    backward_with_executor(dcontext, dqkv, through_qk);
    return projection_backward(dqkv.data(), x_.data(), packed_weight_.data(), through_qk ? 0 : v0,
                               width, w);
  }
  const AttentionProblem p = problem();
  if (!keep_.empty()) {
    backward_with_dropout(p, t);
  } else {
    attention_backward(p, backend_used_, t);
  }
  sink_backward(dcontext);
  // forward was `q, k = rope(x W_q^T + b_q, x W_k^T + b_k)`: rotate dq and dk back.
  if (through_qk) rotate_qk(dqkv.data(), true);
  // forward was `qkv = x W^T + b`: only the value columns when q and k are constants.
  return projection_backward(dqkv.data(), x_.data(), packed_weight_.data(), through_qk ? 0 : v0,
                             width, w);
}

namespace {
// The projections' GEMMs on either element type.
void gemm_of(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
             const float* b, int64_t ldb, float* c, int64_t ldc) {
  kernels::gemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
}
void gemm_of(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, const bfloat16* a, int64_t lda,
             const bfloat16* b, int64_t ldb, float* c, int64_t ldc) {
  kernels::gemm_bf16(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
}
}  // namespace

template <typename T>
Tensor AttentionLayer::projection_backward(const T* dqkv, const T* x, const T* packed_weight,
                                           int64_t c0, int64_t c1, const QkvWeights& w) {
  const int64_t rows = batch_ * seq_, width = shape_.qkv_width(), d_in = shape_.d_in;
  const int64_t cols = c1 - c0;
  const T* dy = dqkv + c0;  // (rows, cols), rows `width` apart
  // forward was `qkv = x W_packed^T + b` (Linear layout): dW_packed (W, d_in) = dqkv^T x, each
  // projection's dW its rows of it; db = column sums of dqkv; dx = dqkv W_packed.
  // SelfAttention_Params: `qkv = x @ W_packed`: dW_packed (d_in, W) = x^T dqkv, dx = dqkv W^T.
  Tensor dw = w.linear_layout ? Tensor({cols, d_in}) : Tensor({d_in, cols});
  if (w.linear_layout) {
    gemm_of(Trans::yes, Trans::no, cols, d_in, rows, dy, width, x, d_in, dw.data(), d_in);
  } else {
    gemm_of(Trans::yes, Trans::no, d_in, cols, rows, x, d_in, dy, width, dw.data(), cols);
  }
  int64_t p0 = 0;  // first column of projection i
  for (int i = 0; i < 3; ++i) {
    const Tensor& wi = w.weight[i]->tensor();
    const int64_t pc = w.linear_layout ? wi.size(0) : wi.size(1);
    if (p0 >= c0 && p0 + pc <= c1) {
      ParameterRef weight = *w.weight[i];
      if (w.linear_layout) {
        weight.accumulate_grad(ConstTensorView(dw.data() + (p0 - c0) * d_in, {pc, d_in}));
      } else {
        weight.accumulate_grad(ConstTensorView(dw.data() + (p0 - c0), {d_in, pc}, {cols, 1}));
      }
      if (w.bias[i] != nullptr && w.bias[i]->requires_grad()) {
        ParameterRef bias = *w.bias[i];
        Tensor db({pc});  // (cols of projection i) column sums, in row order as Linear's
        for (int64_t r = 0; r < rows; ++r) {
          const T* row = dqkv + r * width + p0;
          for (int64_t j = 0; j < pc; ++j) db[j] += static_cast<float>(row[j]);
        }
        bias.accumulate_grad(db);
      }
    }
    p0 += pc;
  }
  Tensor dx({rows, d_in});
  if (w.linear_layout) {
    gemm_of(Trans::no, Trans::no, rows, d_in, cols, dy, width, packed_weight + c0 * d_in, d_in,
            dx.data(), d_in);
  } else {
    gemm_of(Trans::no, Trans::yes, rows, d_in, cols, dy, width, packed_weight + c0, width,
            dx.data(), d_in);
  }
  return dx;
}
template Tensor AttentionLayer::projection_backward(const bfloat16*, const bfloat16*,
                                                    const bfloat16*, int64_t, int64_t,
                                                    const QkvWeights&);

const Tensor& AttentionLayer::context() const {
  if (bf16_ && !context_widened_) {
    context_ = context_bf16_.to_float();
    context_widened_ = true;
  }
  return context_;
}

namespace {
// The heads of a (B*N, width) matrix as (B, count, N, hd) from column `first` * hd.
template <typename T>
BasicTensorView<T> heads_of(T* data, int64_t batch, int64_t seq, int64_t width, int64_t first,
                            int64_t count, int64_t hd) {
  return BasicTensorView<T>(data + first * hd, {batch, count, seq, hd},
                            {seq * width, hd, width, 1});
}
}  // namespace

ConstTensorView AttentionLayer::heads_of_qkv(int64_t first, int64_t count) const {
  widen_qkv();
  return heads_of<const float>(qkv_.data(), batch_, seq_, shape_.qkv_width(), first, count,
                               shape_.head_dim);
}

AttentionOptions AttentionLayer::executor_options() const {
  AttentionOptions options;
  options.causal = call_.causal;
  options.scale_divisor = call_.scale_divisor;
  return options;
}

void AttentionLayer::forward_with_executor() {
  const LayerShape& s = shape_;
  call_.executor->forward(
      heads_of_qkv(0, s.heads), heads_of_qkv(s.heads, s.kv_heads),
      heads_of_qkv(s.heads + s.kv_heads, s.kv_heads),
      heads_of(context_.data(), batch_, seq_, s.heads * s.head_dim, 0, s.heads, s.head_dim),
      lse_.view(), executor_options());
  have_row_stats_ = false;
}

void AttentionLayer::backward_with_executor(ConstTensorView dcontext, Tensor& dqkv,
                                            bool through_qk) const {
  const LayerShape& s = shape_;
  const int64_t width = s.qkv_width(), hd = s.head_dim, ctx = s.heads * hd;
  // dqkv's heads, laid out as qkv's: dq | dk | dv.
  const auto grad_heads = [&](int64_t first, int64_t count) {
    return heads_of(dqkv.data(), batch_, seq_, width, first, count, hd);
  };
  call_.executor->backward(
      heads_of_qkv(0, s.heads), heads_of_qkv(s.heads, s.kv_heads),
      heads_of_qkv(s.heads + s.kv_heads, s.kv_heads),
      heads_of<const float>(context_.data(), batch_, seq_, ctx, 0, s.heads, hd), lse_.view(),
      heads_of(dcontext.data(), batch_, seq_, ctx, 0, s.heads, hd),
      through_qk ? grad_heads(0, s.heads) : TensorView{},
      through_qk ? grad_heads(s.heads, s.kv_heads) : TensorView{},
      grad_heads(s.heads + s.kv_heads, s.kv_heads), executor_options());
}

const Tensor& AttentionLayer::attention_weights() const {
  if (call_.executor != nullptr) {
    throw StateError(call_.executor->describe() +
                     " ran the last forward: its attention weights span every rank's keys and "
                     "are not kept");
  }
  if (!weights_) {
    const int64_t heads = shape_.heads;
    Tensor weights({batch_, heads, seq_, seq_});  // (B, H, N, N)
    if (!probs_.empty()) {
      weights = probs_.reshape({batch_, heads, seq_, seq_});  // the dropout path has them
    } else if (bf16_) {
      attention_probabilities(problem_over<bfloat16>(qkv_bf16_.data()), backend_used_,
                              Strided<const float>::contiguous(lse_.data(), heads, seq_, 1),
                              saved_row_stats(row_max_.data(), log_sum_.data(), have_row_stats_),
                              Strided<float>::contiguous(weights.data(), heads, seq_, seq_));
    } else {
      attention_probabilities(problem(), backend_used_,
                              Strided<const float>::contiguous(lse_.data(), heads, seq_, 1),
                              saved_row_stats(row_max_.data(), log_sum_.data(), have_row_stats_),
                              Strided<float>::contiguous(weights.data(), heads, seq_, seq_));
    }
    weights_ = std::move(weights);
  }
  return *weights_;
}

void AttentionLayer::set_positions() {
  if (call_.rope == nullptr) return;
  positions_.resize(static_cast<size_t>(batch_ * seq_));
  if (call_.cu_seqlens.empty()) {
    for (int64_t r = 0; r < batch_ * seq_; ++r) positions_[static_cast<size_t>(r)] = r % seq_;
    return;
  }
  for (size_t s = 0; s + 1 < call_.cu_seqlens.size(); ++s) {
    for (int64_t r = call_.cu_seqlens[s]; r < call_.cu_seqlens[s + 1]; ++r) {
      positions_[static_cast<size_t>(r)] = r - call_.cu_seqlens[s];
    }
  }
}

template <typename T>
void AttentionLayer::rotate_qk(T* rows, bool inverse) const {
  if (call_.rope == nullptr) return;
  // The q heads (columns [0, H*hd)) and the k heads after them: H + G heads from column 0.
  rope_rows(rows, batch_ * seq_, shape_.qkv_width(), shape_.heads + shape_.kv_heads,
            positions_.data(), *call_.rope, inverse);
}
template void AttentionLayer::rotate_qk(bfloat16* rows, bool inverse) const;

void AttentionLayer::sink_backward(ConstTensorView dcontext) {
  if (call_.sinks.empty()) {
    dsinks_ = Tensor();
    return;
  }
  const int64_t hd = shape_.head_dim, ctx = shape_.heads * hd;
  ensure_shape(dsinks_, {shape_.heads});
  // dsinks_h = -sum over rows of P_sink * (dout . out), out the float32 context (the bfloat16
  // forward's widened).
  sink_gradients(call_shape(), heads_view(context().data(), seq_, ctx, 0, hd).as_const(),
                 Strided<const float>::contiguous(lse_.data(), shape_.heads, seq_, 1),
                 heads_view(dcontext.data(), seq_, ctx, 0, hd), dsinks_.data());
}

void AttentionLayer::clear_saved() {
  batch_ = 0;
  seq_ = 0;
  weights_.reset();
  probs_ = Tensor();
  keep_ = Tensor();
}

}  // namespace llm_utils::detail
