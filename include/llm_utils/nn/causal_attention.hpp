#pragma once
/// \file causal_attention.hpp
/// The book's `CausalAttention` (chapter 3.5): single-head attention in which token i sees only
/// tokens 0..i, with dropout on the attention weights:
///
///   context = dropout(softmax(causal(Q K^T) / sqrt(d_out))) V,  Q, K, V = x W_q^T, x W_k^T, x
///   W_v^T
///
/// Construction draws W_query, W_key, W_value (`Linear(d_in, d_out, bias=qkv_bias)`) in that
/// order, as PyTorch does, so `manual_seed(123)` gives the book's weights and printed outputs.
/// The book's `mask` buffer (`triu(ones(context_length, context_length), 1)`, float 0/1) is
/// emitted by state_dict() and accepted by load_state_dict(); the masking itself goes through
/// the kernels' `causal` option, so the fused kernel skips the hidden tiles.
///
/// Dropout (training mode only, `p > 0`): each attention weight is kept with probability 1 - p
/// and scaled by 1 / (1 - p), as `nn.Dropout`; the keep mask is drawn from our generator (one
/// draw per weight, reproducible from the seed, not PyTorch's bits). That path materialises
/// the weights on the reference kernel; eval() or p == 0 use the normal kernels.
///
/// Example:
/// \code
///   llm_utils::manual_seed(123);
///   llm_utils::CausalAttention ca(3, 2, /*context_length=*/6, /*dropout=*/0.0);
///   llm_utils::Tensor ctx = ca(batch);          // (2, 6, 3) -> (2, 6, 2)
///   llm_utils::Tensor dx = ca.backward(dctx);   // accumulates W_*.weight gradients
/// \endcode

#include <cstdint>
#include <optional>

#include "llm_utils/attention.hpp"
#include "llm_utils/nn/linear.hpp"
#include "llm_utils/nn/parameter.hpp"
#include "llm_utils/nn/state_dict.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {

namespace detail {

struct AttentionProblem;  // src/attention_problem.hpp

/// An additive mask broadcast over (B, H, N, M) for the kernels: contiguous `values` of shape
/// (Bm, Hm, Nm, Mm), each dimension full or 1, read through `strides` (0 where broadcast).
struct BroadcastMask {
  Tensor values;
  int64_t strides[4] = {0, 0, 0, 0};  // B, H, N, M
  bool present = false;
};

/// How a module calls its attention core.
struct CoreOptions {
  bool causal = true;
  int64_t query_offset = 0;
  /// Scores are divided by this; default sqrt(head_dim).
  std::optional<float> scale_divisor;
  /// H: query batch element g is (batch g / H, head g % H); the mask is read that way.
  int64_t heads = 1;
  /// Query heads per key/value head (grouped-query attention).
  int64_t kv_group = 1;
  BroadcastMask mask;
};

/// Attention over G = B*H independent heads with optional dropout on the weights, and what its
/// backward needs. Shared by CausalAttention and MultiHeadAttention.
class AttentionCore {
 public:
  /// q (G, N, hd), k and v (G / kv_group, M, hd) -> (G, N, hd). `dropout` > 0 takes the
  /// materialised path and draws one number per weight from `generator`.
  Tensor forward(Tensor q, Tensor k, Tensor v, CoreOptions options, double dropout, Backend backend,
                 Generator& generator);
  /// dout (G, N, hd) -> dq (G, N, hd), dk and dv (G / kv_group, M, hd), overwritten.
  void backward(ConstTensorView dout, Tensor& dq, Tensor& dk, Tensor& dv) const;
  /// The last forward's keep mask (G, N, M): 0 or 1 / (1 - p); empty when no dropout ran.
  const Tensor& dropout_mask() const { return keep_; }

 private:
  /// The kernels' problem over the saved q_, k_, v_ and options_.
  AttentionProblem problem() const;
  void forward_with_dropout(double dropout, Generator& generator);
  void backward_with_dropout(ConstTensorView dout, Tensor& dq, Tensor& dk, Tensor& dv) const;

  CoreOptions options_;
  Backend backend_ = Backend::automatic;
  Tensor q_;        // (G, N, hd)
  Tensor k_, v_;    // (G / kv_group, M, hd) each
  Tensor out_;      // (G, N, hd)
  Tensor lse_;      // (G, N) log-sum-exp of each row of scores (kernel path)
  Tensor row_max_;  // (G, N) the fused kernel's row statistics (kernel path)
  Tensor log_sum_;  // (G, N)
  bool have_row_stats_ = false;
  Tensor probs_;  // (G, N, M) softmax before dropout (dropout path only)
  Tensor keep_;   // (G, N, M) dropout multipliers (dropout path only)
};

}  // namespace detail

class CausalAttention {
 public:
  /// Throws ArgumentError on non-positive sizes or dropout outside [0, 1). Parameters are drawn
  /// from `generator` (the default generator when null), which dropout also draws from.
  CausalAttention(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                  bool qkv_bias = false, Generator* generator = nullptr);

  int64_t d_in() const { return W_query.in_features(); }
  int64_t d_out() const { return W_query.out_features(); }
  int64_t context_length() const { return mask.size(0); }
  double dropout() const { return dropout_; }

  /// x: (N, d_in) or (B, N, d_in) with 1 <= N <= context_length -> (N, d_out) or (B, N, d_out).
  Tensor forward(ConstTensorView x);
  Tensor operator()(ConstTensorView x) { return forward(x); }
  /// grad_output shaped as forward's result -> dL/dx; accumulates parameter gradients (+=),
  /// through the same dropout mask as the forward. Throws StateError before a forward.
  Tensor backward(ConstTensorView grad_output);
  void zero_grad(bool set_to_none = true);

  /// Training mode (the default, as in PyTorch) applies dropout; eval mode does not.
  void train(bool mode = true) { training_ = mode; }
  void eval() { training_ = false; }
  bool training() const { return training_; }
  void set_backend(Backend backend) { backend_ = backend; }
  Backend backend() const { return backend_; }

  /// W_query.weight, W_query.bias (if any), W_key..., W_value... (PyTorch's order).
  NamedParameters named_parameters();
  /// As PyTorch: `mask` first (the module's own buffer), then the parameters.
  StateDict state_dict() const;
  /// All or nothing; `mask`, when present, must be the (context_length, context_length) causal
  /// mask. Missing, unexpected (when strict) or misshapen keys throw ArgumentError.
  void load_state_dict(const StateDict& state, bool strict = true);

  /// The last forward's dropout multipliers (B, N, N); empty when no dropout ran.
  const Tensor& dropout_mask() const { return core_.dropout_mask(); }

  Linear W_query;
  Linear W_key;
  Linear W_value;
  Tensor mask;  ///< (context_length, context_length): 1 above the diagonal, the book's buffer

 private:
  double dropout_;
  bool training_ = true;
  Backend backend_ = Backend::automatic;
  Generator* generator_;  // null: the default generator
  detail::AttentionCore core_;
  // Saved by forward for backward; batch_ == 0 before the first forward.
  int64_t batch_ = 0;
  int64_t seq_ = 0;
  bool input_was_2d_ = false;
  Tensor input_;  // (B*N, d_in)
};

}  // namespace llm_utils
