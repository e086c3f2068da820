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
/// Beyond the book, for inference and later chapters (MultiHeadAttentionOptions,
/// AttentionForwardOptions): grouped-query attention (`num_kv_groups`), a scale override, a
/// non-causal mode, attention and key-padding masks, and a KV cache for incremental decoding.
///
/// Example:
/// \code
///   llm_utils::manual_seed(123);
///   llm_utils::MultiHeadAttention mha(3, 2, /*context_length=*/6, /*dropout=*/0.0,
///                                     /*num_heads=*/2);
///   llm_utils::Tensor ctx = mha(batch);   // (2, 6, 3) -> (2, 6, 2), the book's numbers
///
///   // Decoding token by token: the same rows as one causal forward over the whole sequence.
///   mha.eval();
///   for (int64_t t = 0; t < 6; ++t) {
///     llm_utils::Tensor row = mha.forward(token_t, {.use_cache = true});  // (1, 1, 3) -> (1, 1,
///     2)
///   }
///   mha.reset_cache();
/// \endcode

#include <cstdint>
#include <optional>
#include <vector>

#include "llm_utils/nn/attention_mask.hpp"
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

/// What MultiHeadAttention adds to the book's class (none of it changes the book's numbers when
/// left at its default).
struct MultiHeadAttentionOptions {
  /// Key/value heads for grouped-query attention: W_key and W_value become
  /// Linear(d_in, num_kv_groups * head_dim) and each consecutive num_heads / num_kv_groups query
  /// heads share one key/value head (as `repeat_interleave` in the book's later GQA code).
  /// 0 = num_heads (plain multi-head attention); 1 = multi-query attention.
  int64_t num_kv_groups = 0;
  /// Scores are multiplied by this (PyTorch SDPA's `scale`); default 1 / sqrt(head_dim), applied
  /// as the book does, dividing by sqrt(head_dim).
  std::optional<double> scale;
  /// The book's causal mask. false: every token sees every token (an encoder).
  bool causal = true;
};

/// The optional arguments of MultiHeadAttention::forward.
struct AttentionForwardOptions {
  /// Broadcast to (batch, num_heads, queries, keys): rank 2 to 4, aligned right, each dimension
  /// full or 1. Keys count the cached tokens too when use_cache is on. Applied on top of the
  /// causal mask.
  AttentionMask attn_mask;
  /// (batch, keys) or (keys): hides padding keys from every query (AttentionMask::padding).
  AttentionMask key_padding_mask;
  /// Inference with a KV cache: append this call's keys and values to the module's cache and
  /// attend over everything cached, the new queries at positions cache_size()... (so that
  /// feeding tokens one at a time gives the outputs of one causal forward over all of them).
  /// No backward follows such a call; training mode with dropout > 0 is an error.
  bool use_cache = false;
};

class MultiHeadAttention {
 public:
  /// Throws ArgumentError on non-positive sizes, d_out not divisible by num_heads, or dropout
  /// outside [0, 1).
  MultiHeadAttention(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                     int64_t num_heads, bool qkv_bias = false, Generator* generator = nullptr);
  /// With the options above; also throws ArgumentError when num_heads is not a multiple of
  /// num_kv_groups or the scale is not positive and finite.
  MultiHeadAttention(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                     int64_t num_heads, bool qkv_bias, const MultiHeadAttentionOptions& options,
                     Generator* generator = nullptr);

  int64_t d_in() const { return W_query.in_features(); }
  int64_t d_out() const { return W_query.out_features(); }
  int64_t num_heads() const { return num_heads_; }
  int64_t num_kv_groups() const { return num_kv_groups_; }
  int64_t head_dim() const { return d_out() / num_heads_; }
  int64_t context_length() const { return mask.size(0); }
  double dropout() const { return dropout_; }
  bool causal() const { return causal_; }

  /// x: (N, d_in) or (B, N, d_in), 1 <= N <= context_length -> (N, d_out) or (B, N, d_out).
  Tensor forward(ConstTensorView x) { return forward(x, AttentionForwardOptions{}); }
  /// With masks and/or the KV cache. Throws ArgumentError on misshapen masks, on a cached call
  /// whose batch differs from the cache's or that would hold more than context_length tokens.
  Tensor forward(ConstTensorView x, const AttentionForwardOptions& options);
  Tensor operator()(ConstTensorView x) { return forward(x); }
  /// As CausalAttention::backward; out_proj's weight and bias get gradients too. Throws
  /// StateError after a cached forward.
  Tensor backward(ConstTensorView grad_output);
  void zero_grad(bool set_to_none = true);

  /// Tokens in the KV cache (0 before the first cached forward and after reset_cache()).
  int64_t cache_size() const { return cache_.size; }
  /// Empties the KV cache (keeping its memory for the next sequence).
  void reset_cache() { cache_.size = 0; }

  void train(bool mode = true) { training_ = mode; }
  void eval() { training_ = false; }
  bool training() const { return training_; }
  void set_backend(Backend backend) { backend_ = backend; }
  Backend backend() const { return backend_; }

  /// W_query.*, W_key.*, W_value.*, out_proj.weight, out_proj.bias.
  NamedParameters named_parameters();
  /// `mask` first, then the parameters, as PyTorch. The KV cache is not part of it.
  StateDict state_dict() const;
  /// All or nothing, as CausalAttention's; empties the KV cache, which the old weights made.
  void load_state_dict(const StateDict& state, bool strict = true);

  /// The last forward's dropout multipliers (B * num_heads, N, N); empty when none ran.
  const Tensor& dropout_mask() const { return core_.dropout_mask(); }

  Linear W_query;
  Linear W_key;    ///< (num_kv_groups * head_dim, d_in) weight
  Linear W_value;  ///< (num_kv_groups * head_dim, d_in) weight
  Linear out_proj;
  Tensor mask;  ///< (context_length, context_length): 1 above the diagonal, the book's buffer

 private:
  /// Keys and values of the tokens seen so far, per key/value head, with room to grow.
  struct KVCache {
    int64_t batch = 0;
    int64_t size = 0;      // tokens held
    int64_t capacity = 0;  // tokens that fit before the tensors grow
    Tensor keys;           // (B * num_kv_groups, capacity, head_dim)
    Tensor values;         // (B * num_kv_groups, capacity, head_dim)
  };
  Tensor forward_cached(ConstTensorView x, const AttentionForwardOptions& options);
  detail::CoreOptions core_options() const;

  int64_t num_heads_;
  int64_t num_kv_groups_;
  double dropout_;
  std::optional<float> scale_divisor_;  // from options.scale; none: the book's sqrt(head_dim)
  bool causal_;
  bool training_ = true;
  Backend backend_ = Backend::automatic;
  Generator* generator_;  // null: the default generator
  detail::AttentionCore core_;
  KVCache cache_;
  int64_t batch_ = 0;  // 0: no forward to differentiate (none yet, weights loaded, or cached)
  int64_t seq_ = 0;
  bool input_was_2d_ = false;
  bool last_forward_cached_ = false;
  Tensor input_;   // (B*N, d_in)
  Tensor merged_;  // (B*N, d_out) heads' context vectors, out_proj's input
};

}  // namespace llm_utils
