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
/// A Module (module.hpp); the projections run as one GEMM against the packed weights, and
/// attention reads queries, keys and values in place from its output.
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

#include "llm_utils/detail/value_ptr.hpp"
#include "llm_utils/nn/linear.hpp"
#include "llm_utils/nn/module.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {

namespace detail {
class AttentionLayer;  // src/nn/attention_layer.hpp
}

class CausalAttention : public Module {
 public:
  /// Throws ArgumentError on non-positive sizes or dropout outside [0, 1). Parameters are drawn
  /// from `generator` (the default generator when null), which dropout also draws from.
  CausalAttention(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                  bool qkv_bias = false, Generator* generator = nullptr);
  CausalAttention(const CausalAttention& other);
  CausalAttention(CausalAttention&& other) noexcept;
  ~CausalAttention() override;

  int64_t d_in() const { return in_features(); }
  int64_t d_out() const { return out_features(); }
  int64_t context_length() const { return mask.size(0); }
  double dropout() const { return dropout_; }

  /// The last forward's attention weights before dropout, with the rank of its input: (N, N)
  /// or (B, N, N). Computed on first use. StateError before a forward.
  ConstTensorView attn_weights() const;
  /// The last forward's dropout multipliers (B, N, N); empty when no dropout ran.
  const Tensor& dropout_mask() const;

  /// As PyTorch: `mask` (the module's own buffer) first, then W_query.weight, W_query.bias (with
  /// qkv_bias), W_key..., W_value...
  std::vector<StateEntry> state_entries() const override;

  Linear W_query;
  Linear W_key;
  Linear W_value;
  /// (context_length, context_length): 1 above the diagonal, the book's buffer. state_dict()
  /// emits it and load_state_dict() accepts it when it is this causal mask.
  const Tensor mask;

 protected:
  Tensor forward_rows(ConstTensorView x, const Input& in) override;
  Tensor backward_rows(ConstTensorView dy) override;

 private:
  double dropout_;
  Generator* generator_;  // null: the default generator
  detail::ValuePtr<detail::AttentionLayer> layer_;
};

}  // namespace llm_utils
