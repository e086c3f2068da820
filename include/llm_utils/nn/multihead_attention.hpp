#pragma once
/// \file multihead_attention.hpp
/// The book's two multi-head classes (chapter 3.6), causal with dropout as CausalAttention:
///
/// - `MultiHeadAttentionWrapper(d_in, d_out, context_length, dropout, num_heads, qkv_bias)`:
///   num_heads CausalAttention heads built in order, outputs concatenated: width d_out*num_heads.
/// - `MultiHeadAttention(d_in, d_out, context_length, dropout, num_heads, qkv_bias)`: one set of
///   projections split into num_heads heads of head_dim = d_out / num_heads, attention per head
///   (scores / sqrt(head_dim)), heads merged and passed through `out_proj = Linear(d_out, d_out)`
///   (with bias). Built W_query, W_key, W_value, out_proj, as in PyTorch.
///
/// Example:
/// \code
///   llm_utils::manual_seed(123);
///   llm_utils::MultiHeadAttention mha(3, 2, /*context_length=*/6, /*dropout=*/0.0,
///                                     /*num_heads=*/2);
///   llm_utils::Tensor ctx = mha(batch);   // (2, 6, 3) -> (2, 6, 2), the book's numbers
/// \endcode

#include <cstdint>
#include <vector>

#include "llm_utils/nn/causal_attention.hpp"

namespace llm_utils {

class MultiHeadAttentionWrapper {
 public:
  /// Throws ArgumentError on non-positive sizes or dropout outside [0, 1).
  MultiHeadAttentionWrapper(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                            int64_t num_heads, bool qkv_bias = false,
                            Generator* generator = nullptr);

  int64_t num_heads() const { return static_cast<int64_t>(heads.size()); }

  /// x: (N, d_in) or (B, N, d_in) -> (..., N, d_out * num_heads), head h in columns
  /// [h * d_out, (h + 1) * d_out).
  Tensor forward(ConstTensorView x);
  Tensor operator()(ConstTensorView x) { return forward(x); }
  Tensor backward(ConstTensorView grad_output);
  void zero_grad(bool set_to_none = true);

  void train(bool mode = true);
  void eval() { train(false); }
  bool training() const { return heads.front().training(); }
  void set_backend(Backend backend);

  /// `heads.<h>.W_query.weight`, ...
  NamedParameters named_parameters();
  /// `heads.<h>.mask`, `heads.<h>.W_query.weight`, ... per head, as PyTorch.
  StateDict state_dict() const;
  void load_state_dict(const StateDict& state, bool strict = true);

  std::vector<CausalAttention> heads;
};

class MultiHeadAttention {
 public:
  /// Throws ArgumentError on non-positive sizes, d_out not divisible by num_heads, or dropout
  /// outside [0, 1).
  MultiHeadAttention(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                     int64_t num_heads, bool qkv_bias = false, Generator* generator = nullptr);

  int64_t d_in() const { return W_query.in_features(); }
  int64_t d_out() const { return W_query.out_features(); }
  int64_t num_heads() const { return num_heads_; }
  int64_t head_dim() const { return d_out() / num_heads_; }
  int64_t context_length() const { return mask.size(0); }
  double dropout() const { return dropout_; }

  /// x: (N, d_in) or (B, N, d_in), 1 <= N <= context_length -> (N, d_out) or (B, N, d_out).
  Tensor forward(ConstTensorView x);
  Tensor operator()(ConstTensorView x) { return forward(x); }
  /// As CausalAttention::backward; out_proj's weight and bias get gradients too.
  Tensor backward(ConstTensorView grad_output);
  void zero_grad(bool set_to_none = true);

  void train(bool mode = true) { training_ = mode; }
  void eval() { training_ = false; }
  bool training() const { return training_; }
  void set_backend(Backend backend) { backend_ = backend; }
  Backend backend() const { return backend_; }

  /// W_query.*, W_key.*, W_value.*, out_proj.weight, out_proj.bias.
  NamedParameters named_parameters();
  /// `mask` first, then the parameters, as PyTorch.
  StateDict state_dict() const;
  void load_state_dict(const StateDict& state, bool strict = true);

  /// The last forward's dropout multipliers (B * num_heads, N, N); empty when none ran.
  const Tensor& dropout_mask() const { return core_.dropout_mask(); }

  Linear W_query;
  Linear W_key;
  Linear W_value;
  Linear out_proj;
  Tensor mask;  ///< (context_length, context_length): 1 above the diagonal, the book's buffer

 private:
  int64_t num_heads_;
  double dropout_;
  bool training_ = true;
  Backend backend_ = Backend::automatic;
  Generator* generator_;  // null: the default generator
  detail::CausalAttentionCore core_;
  int64_t batch_ = 0;
  int64_t seq_ = 0;
  bool input_was_2d_ = false;
  Tensor input_;   // (B*N, d_in)
  Tensor merged_;  // (B*N, d_out) heads' context vectors, out_proj's input
};

}  // namespace llm_utils
