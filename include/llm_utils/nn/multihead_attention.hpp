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
#include <memory>
#include <optional>
#include <vector>

#include "llm_utils/detail/value_ptr.hpp"
#include "llm_utils/nn/attention_executor.hpp"
#include "llm_utils/nn/attention_mask.hpp"
#include "llm_utils/nn/causal_attention.hpp"
#include "llm_utils/nn/module.hpp"

namespace llm_utils {

class MultiHeadAttentionWrapper : public Module {
 public:
  /// Throws ArgumentError on non-positive sizes or dropout outside [0, 1).
  MultiHeadAttentionWrapper(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                            int64_t num_heads, bool qkv_bias = false,
                            Generator* generator = nullptr);

  int64_t num_heads() const { return static_cast<int64_t>(heads.size()); }

  /// Propagate to every head.
  void train(bool mode = true) override;
  void set_backend(Backend backend) override;
  void set_dtype(DType dtype) override;
  /// Each head's entries under `heads.<h>.`, head by head (`heads.0.mask`,
  /// `heads.0.W_query.weight`,
  /// ...), as PyTorch.
  std::vector<StateEntry> state_entries() const override;

  /// The heads, in order; forward's output holds head h in columns [h * d_out, (h + 1) * d_out).
  /// Their parameters and masks appear as `heads.<h>.W_query.weight`, `heads.<h>.mask`, ...
  std::vector<CausalAttention> heads;

 protected:
  Tensor forward_rows(ConstTensorView x, const Input& in) override;
  Tensor backward_rows(ConstTensorView dy) override;
  /// The heads' saved forwards are stale too.
  void after_load() override;
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

class MultiHeadAttention : public Module {
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
  MultiHeadAttention(const MultiHeadAttention& other);
  MultiHeadAttention(MultiHeadAttention&& other) noexcept;
  ~MultiHeadAttention() override;

  int64_t d_in() const { return in_features(); }
  int64_t d_out() const { return out_features(); }
  int64_t num_heads() const { return num_heads_; }
  int64_t num_kv_groups() const { return num_kv_groups_; }
  int64_t head_dim() const { return d_out() / num_heads_; }
  int64_t context_length() const { return mask.size(0); }
  double dropout() const { return dropout_; }
  bool causal() const { return causal_; }

  using Module::forward;
  /// With masks and/or the KV cache. Throws ArgumentError on misshapen masks, on a cached call
  /// whose batch differs from the cache's or that would hold more than context_length tokens;
  /// a call that throws changes nothing (the cache included).
  Tensor forward(ConstTensorView x, const AttentionForwardOptions& options);

  /// Tokens in the KV cache (0 before the first cached forward and after reset_cache()).
  int64_t cache_size() const { return cache_.size; }
  /// Empties the KV cache (keeping its memory for the next sequence).
  void reset_cache() { cache_.size = 0; }

  /// The last (uncached) forward's attention weights before dropout, with the rank of its
  /// input: (H, N, N) or (B, H, N, N). Computed on first use. StateError before a forward.
  ConstTensorView attn_weights() const;
  /// The last forward's dropout multipliers (B * num_heads, N, N); empty when none ran.
  const Tensor& dropout_mask() const;

  /// Runs the attention (not the projections) through `executor`, e.g. over the ranks of an
  /// MPI job that each hold a part of the sequence (attention_executor.hpp); null: this
  /// process's kernels again. With an executor, forward takes float32, no attn_mask or
  /// key_padding_mask, no dropout in training mode and no KV cache (ArgumentError otherwise),
  /// and attn_weights() is a StateError.
  void set_attention_executor(std::shared_ptr<AttentionExecutor> executor) {
    executor_ = std::move(executor);
  }
  const std::shared_ptr<AttentionExecutor>& attention_executor() const { return executor_; }

  /// `mask`, then W_query.*, W_key.*, W_value.*, out_proj.weight, out_proj.bias, as PyTorch. The
  /// KV cache is not part of it.
  std::vector<StateEntry> state_entries() const override;

  Linear W_query;
  Linear W_key;    ///< (num_kv_groups * head_dim, d_in) weight
  Linear W_value;  ///< (num_kv_groups * head_dim, d_in) weight
  Linear out_proj;
  /// (context_length, context_length): 1 above the diagonal, the book's buffer
  const Tensor mask;

 protected:
  Tensor forward_rows(ConstTensorView x, const Input& in) override;
  Tensor backward_rows(ConstTensorView dy) override;
  void after_load() override { reset_cache(); }

 private:
  /// Keys and values of the tokens seen so far, as one projection writes them: token t of
  /// batch element b holds its G key heads then its G value heads, (2 * G * head_dim) floats.
  struct KVCache {
    int64_t batch = 0;
    int64_t size = 0;      // tokens held
    int64_t capacity = 0;  // tokens that fit before the tensor grows
    Tensor kv;             // (B, capacity, 2 * G * head_dim)
  };
  Tensor forward_uncached(ConstTensorView x, const Input& in,
                          const AttentionForwardOptions& options);
  Tensor forward_cached(ConstTensorView x, const Input& in, const AttentionForwardOptions& options);

  int64_t num_heads_;
  int64_t num_kv_groups_;
  double dropout_;
  std::optional<float> scale_divisor_;  // from options.scale; none: the book's sqrt(head_dim)
  bool causal_;
  Generator* generator_;  // null: the default generator
  detail::ValuePtr<detail::AttentionLayer> layer_;
  std::shared_ptr<AttentionExecutor> executor_;  // null: the kernels
  KVCache cache_;
};

}  // namespace llm_utils
