#pragma once
/// \file self_attention.hpp
/// The four classes of `llm_utils.selfAttn`, with the original's names, constructor arguments,
/// defaults, parameter names and initialisation order. All compute
///
///   context = softmax((x W_q)(x W_k)^T / sqrt(d_out)) (x W_v)
///
/// on x of shape (N, d_in) or (B, N, d_in) (the original's docs promise the batched form; its
/// code only ran on 2-D input), returning (N, d_out) or (B, N, d_out).
///
/// Training: `backward(grad_output)` returns the gradient with respect to x and accumulates
/// parameter gradients (`+=`), exactly what PyTorch autograd gives on the original code. In
/// SelfAttention_Linear4 and SelfAttention_Linear5 the attention weights reach the output only
/// through frozen derived layers, so, as in the original, only W_value (and its bias) receives a
/// gradient and W_query / W_key keep `has_grad() == false` (PyTorch's `.grad is None`).
///
/// Example:
/// \code
///   llm_utils::manual_seed(789);
///   llm_utils::SelfAttention_Linear sa(3, 2);
///   llm_utils::Tensor ctx = sa(x);                       // x: (6, 3) -> ctx: (6, 2)
///   llm_utils::ConstTensorView w = sa.attn_weights();    // (6, 6)
///   llm_utils::Tensor dx = sa.backward(llm_utils::Tensor::full(ctx.shape(), 1.0f));
/// \endcode
///
/// All four are Modules (module.hpp): state dicts, named_parameters, zero_grad, backends. The
/// projections run as one GEMM against the three weights packed side by side, and attention
/// reads the queries, keys and values in place from its output.
///
/// Thread safety: one module must not be used from two threads at once; separate modules may
/// run concurrently. Construction (and SelfAttention_Linear4/5's forward, see below) draw from
/// the generator they are given (the default generator unless given another), so seed and
/// construct from one thread.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llm_utils/detail/value_ptr.hpp"
#include "llm_utils/nn/linear.hpp"
#include "llm_utils/nn/module.hpp"
#include "llm_utils/nn/parameter.hpp"
#include "llm_utils/nn/state_dict.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {

namespace detail {
class AttentionLayer;  // src/nn/attention_layer.hpp
struct QkvWeights;
}  // namespace detail

/// What the four classes share: the attention layer, the saved forward's inspection, the
/// derived state of Linear4/5. Not constructible on its own.
class SelfAttentionBase : public Module {
 public:
  ~SelfAttentionBase() override;

  int64_t d_in() const { return in_features(); }
  int64_t d_out() const { return out_features(); }

  /// From the last forward, with the rank of its input: values (N, d_out) or (B, N, d_out),
  /// attention weights (N, N) or (B, N, N), context vectors (N, d_out) or (B, N, d_out).
  /// Views into the module (values a strided view of the packed projection), valid until the
  /// next forward. Throw StateError before a forward.
  ConstTensorView values() const;
  ConstTensorView attn_weights() const;
  ConstTensorView context_vec() const;

  using Module::state_dict;
  /// With `include_derived`, after a 2-D forward, also the derived layer weights the original's
  /// state dict holds then (Linear4/5 only); ArgumentError after a 3-D forward.
  StateDict state_dict(bool include_derived) const;

 protected:
  SelfAttentionBase(std::string class_name, int64_t d_in, int64_t d_out);
  SelfAttentionBase(const SelfAttentionBase& other);
  SelfAttentionBase(SelfAttentionBase&& other) noexcept;

  Tensor forward_rows(ConstTensorView x, const Input& in) override;
  Tensor backward_rows(ConstTensorView dy) override;
  /// The projection weights, as the layer reads them.
  virtual detail::QkvWeights qkv_weights() const = 0;
  /// False where the original detaches the attention weights (Linear4/5).
  virtual bool gradient_reaches_queries_and_keys() const { return true; }
  /// Runs after each forward with the batch and sequence sizes.
  virtual void after_forward(int64_t /*batch*/, int64_t /*seq*/) {}
  /// Derived state-dict entries (name, tensor) after a 2-D forward; none by default.
  virtual std::vector<std::pair<std::string, Tensor>> derived_state() const { return {}; }

  /// The (N, N) attention weights (computed on first use) and (N, d_out) keys of batch element
  /// b of the last forward.
  ConstTensorView saved_attn_weights(int64_t b) const;
  ConstTensorView saved_keys(int64_t b) const;
  int64_t saved_batch() const { return saved_input().batch; }

 private:
  /// t with the rank of the last forward's input: its batch element 0 for 2-D input.
  ConstTensorView as_input_rank(ConstTensorView t) const;
  void require_forward(const char* what) const;

  detail::ValuePtr<detail::AttentionLayer> layer_;
};

/// Weights as bare parameter matrices (d_in, d_out), used as `x @ W`, drawn with `torch.rand`
/// (U[0, 1)) in the order query, key, value.
class SelfAttention_Params : public SelfAttentionBase {
 public:
  SelfAttention_Params(int64_t d_in, int64_t d_out, Generator* generator = nullptr);

  /// W_query, W_key, W_value.
  std::vector<StateEntry> state_entries() const override;

  Parameter W_query;  ///< (d_in, d_out)
  Parameter W_key;    ///< (d_in, d_out)
  Parameter W_value;  ///< (d_in, d_out)

 protected:
  detail::QkvWeights qkv_weights() const override;
};

/// Projections through three `Linear(d_in, d_out, bias=qkv_bias)` layers built in the order
/// query, key, value. Base of SelfAttention_Linear, _Linear4 and _Linear5.
class SelfAttentionLinearProjections : public SelfAttentionBase {
 public:
  /// W_query.weight, W_query.bias (with qkv_bias), W_key..., W_value...
  std::vector<StateEntry> state_entries() const override;

  Linear W_query;
  Linear W_key;
  Linear W_value;

 protected:
  SelfAttentionLinearProjections(std::string class_name, int64_t d_in, int64_t d_out, bool qkv_bias,
                                 Generator* generator);
  detail::QkvWeights qkv_weights() const override;
};

/// `softmax(Q K^T / sqrt(d_out)) V` with Q, K, V from linear layers.
class SelfAttention_Linear : public SelfAttentionLinearProjections {
 public:
  SelfAttention_Linear(int64_t d_in, int64_t d_out, bool qkv_bias = false,
                       Generator* generator = nullptr);
};

/// The context vectors through a linear layer whose weight *is* the attention-weight matrix:
/// `attnValues2ContextL(values^T)^T` with a frozen `Linear(N, N, bias=False)`, also kept as
/// `model`. Only W_value (and its bias) receives gradients.
///
/// Like the original, each forward builds that layer with `nn.Linear(N, N)`, which draws N*N
/// numbers before its weight is replaced: forward advances the generator the module was built
/// with (the default generator unless given another) by B*N*N draws, so that modules built
/// after it get PyTorch's weights. `set_advance_generator(false)` turns this off.
class SelfAttention_Linear4 : public SelfAttentionLinearProjections {
 public:
  SelfAttention_Linear4(int64_t d_in, int64_t d_out, bool qkv_bias = false,
                        Generator* generator = nullptr);

  /// The frozen (N, N) layer of batch element b from the last forward (b = 0 for 2-D input).
  const Linear& attnValues2ContextL(int64_t b = 0) const;
  /// The same layer under the original's second name.
  const Linear& model(int64_t b = 0) const { return attnValues2ContextL(b); }

  void set_advance_generator(bool on) { advance_generator_ = on; }

 protected:
  SelfAttention_Linear4(std::string class_name, int64_t d_in, int64_t d_out, bool qkv_bias,
                        Generator* generator);
  bool gradient_reaches_queries_and_keys() const override { return false; }
  void after_forward(int64_t batch, int64_t seq) override;
  std::vector<std::pair<std::string, Tensor>> derived_state() const override;
  bool is_derived_key(const std::string& key) const override;
  /// Draws the original's forward makes per batch element before its own layers.
  virtual uint64_t extra_draws_per_element(int64_t /*seq*/) const { return 0; }

 private:
  Generator* generator_;  // the one the module was built with; null: the default generator
  bool advance_generator_ = true;
  mutable std::vector<Linear> context_layers_;  // built on first inspection after a forward
};

/// As SelfAttention_Linear4, and the scores too go through a frozen linear layer:
/// `attnQueries2ScoresL = Linear(d_out, N, bias=False)` whose weight is the keys (N, d_out).
/// Forward advances the module's generator by B*(N*d_out + N*N) draws, as the original does.
class SelfAttention_Linear5 : public SelfAttention_Linear4 {
 public:
  SelfAttention_Linear5(int64_t d_in, int64_t d_out, bool qkv_bias = false,
                        Generator* generator = nullptr);

  /// The frozen (N, d_out) scores layer of batch element b from the last forward.
  const Linear& attnQueries2ScoresL(int64_t b = 0) const;

 protected:
  std::vector<std::pair<std::string, Tensor>> derived_state() const override;
  bool is_derived_key(const std::string& key) const override;
  uint64_t extra_draws_per_element(int64_t seq) const override;
  void after_forward(int64_t batch, int64_t seq) override;

 private:
  mutable std::vector<Linear> score_layers_;
};

/// Builds one of the four classes by name: the class name ("SelfAttention_Linear4") or the
/// CLI's short name ("params", "linear", "linear4", "linear5"). Throws ArgumentError on an
/// unknown name, or on qkv_bias = true for SelfAttention_Params (which has no bias).
std::unique_ptr<SelfAttentionBase> make_self_attention(std::string_view name, int64_t d_in,
                                                       int64_t d_out, bool qkv_bias = false,
                                                       Generator* generator = nullptr);

}  // namespace llm_utils
