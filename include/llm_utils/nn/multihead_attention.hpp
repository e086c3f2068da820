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
/// non-causal mode, attention and key-padding masks, a KV cache for incremental decoding; and
/// the variants of later models (docs/variants.md): rotary position embedding (RoPE), a
/// sliding window, logit softcapping, ALiBi, learnable attention sinks, packed
/// variable-length sequences (`cu_seqlens`) and a paged KV cache for batched decoding.
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
#include <span>
#include <string>
#include <vector>

#include "llm_utils/detail/value_ptr.hpp"
#include "llm_utils/nn/attention_executor.hpp"
#include "llm_utils/nn/attention_mask.hpp"
#include "llm_utils/nn/causal_attention.hpp"
#include "llm_utils/nn/module.hpp"
#include "llm_utils/nn/paged_kv_cache.hpp"
#include "llm_utils/rope.hpp"

namespace llm_utils {

namespace detail {
struct LayerCall;  // src/nn/attention_layer.hpp
}

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
  std::optional<double> scale{};
  /// The book's causal mask. false: every token sees every token (an encoder).
  bool causal = true;

  // The variants of later models (attention.hpp's options, applied per head; none changes
  // anything at its default).

  /// Sliding window (Mistral, Gemma 2): token i also stops seeing tokens before
  /// i - window_left (with `causal`: itself and the window_left tokens before it). -1: none.
  int64_t window_left = -1;
  /// Logit softcap (Gemma 2): scaled scores become softcap * tanh(score / softcap). 0: none.
  float softcap = 0.0f;
  /// ALiBi (BLOOM, MPT): -slope_h * |i - j| added to the scores of head h, with the slopes of
  /// alibi_slopes(num_heads) (rope.hpp). Usually without RoPE.
  bool alibi = false;
  /// Attention sinks (gpt-oss): a learnable logit per head, the parameter `sinks`
  /// (num_heads), zeros at construction, in every softmax's denominator with no value.
  bool sinks = false;
  /// Rotary position embedding on q and k after the projections (the book's Llama code):
  /// token i at position i (after the KV cache's tokens; from 0 in each packed sequence).
  /// Needs an even head_dim.
  std::optional<RopeOptions> rope{};
};

/// The optional arguments of MultiHeadAttention::forward.
struct AttentionForwardOptions {
  /// Broadcast to (batch, num_heads, queries, keys): rank 2 to 4, aligned right, each dimension
  /// full or 1. Keys count the cached tokens too when use_cache is on. Applied on top of the
  /// causal mask.
  AttentionMask attn_mask{};
  /// (batch, keys) or (keys): hides padding keys from every query (AttentionMask::padding).
  AttentionMask key_padding_mask{};
  /// Inference with a KV cache: append this call's keys and values to the module's cache and
  /// attend over everything cached, the new queries at positions cache_size()... (so that
  /// feeding tokens one at a time gives the outputs of one causal forward over all of them).
  /// No backward follows such a call; training mode with dropout > 0 is an error.
  bool use_cache = false;
  /// Packed variable-length sequences (FlashAttention's varlen): x is (T, d_in), sequences
  /// s = 0.. are its rows [cu_seqlens[s], cu_seqlens[s + 1]) (from 0 to T, nondecreasing, each
  /// at most context_length long), and each attends within itself only (causal per sequence,
  /// RoPE positions from 0 in each). The output is (T, d_out); backward works as usual. No
  /// masks with it. Empty: none. With paged_cache: how many new tokens each sequence brings.
  std::span<const int64_t> cu_seqlens{};
  /// Inference over a paged KV cache (paged_kv_cache.hpp): sequence sequence_ids[s] of the
  /// cache gets its new tokens' keys and values appended, then its new tokens attend over all
  /// of its tokens (causal; RoPE positions continue from its length). x is (S, n, d_in): n new
  /// tokens per sequence; or (T, d_in) with cu_seqlens. The cache's kv_heads and head_dim must
  /// be the module's, no sequence may grow past context_length, and the pages must suffice
  /// (all checked before anything changes). No backward follows; no masks, no use_cache.
  PagedKVCache* paged_cache = nullptr;
  std::span<const int64_t> sequence_ids{};
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
  int64_t window_left() const { return window_left_; }
  float softcap() const { return softcap_; }
  /// The ALiBi slopes (num_heads), empty without ALiBi.
  const Tensor& alibi_slopes() const { return alibi_slopes_; }
  /// The RoPE tables (context_length positions), null without RoPE.
  const RopeTable* rope() const { return rope_.get(); }

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

  /// `sinks` (with the option), `mask`, then W_query.*, W_key.*, W_value.*, out_proj.weight,
  /// out_proj.bias, as PyTorch orders a module's own parameters, its buffers, then its
  /// children's. The KV cache is not part of it.
  std::vector<StateEntry> state_entries() const override;

  /// (num_heads) the attention sinks' logits (MultiHeadAttentionOptions::sinks), else absent.
  std::optional<Parameter> sinks;

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
  Tensor forward_paged(ConstTensorView x, const Input& in, const AttentionForwardOptions& options);
  /// ArgumentError unless the sinks (an optional a caller may emplace) are (H), the biases fit
  /// and sequence_ids come with a paged_cache: the checks every forward path makes first.
  void check_call(const std::string& where, const AttentionForwardOptions& options) const;
  /// The call's variants for the layer (everything but masks, dropout and the executor).
  void set_variants(detail::LayerCall& call) const;
  /// The kernels' options for this module's variants (the KV-cache paths).
  AttentionOptions variant_options() const;

  int64_t num_heads_;
  int64_t num_kv_groups_;
  double dropout_;
  std::optional<float> scale_divisor_;  // from options.scale; none: the book's sqrt(head_dim)
  bool causal_;
  int64_t window_left_;
  float softcap_;
  Tensor alibi_slopes_;                    // (H), or empty
  std::shared_ptr<const RopeTable> rope_;  // context_length positions; shared by copies
  Generator* generator_;                   // null: the default generator
  detail::ValuePtr<detail::AttentionLayer> layer_;
  std::shared_ptr<AttentionExecutor> executor_;  // null: the kernels
  KVCache cache_;
};

}  // namespace llm_utils
