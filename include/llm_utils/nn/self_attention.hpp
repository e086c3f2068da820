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
/// Thread safety: one module must not be used from two threads at once; separate modules may
/// run concurrently. Construction (and SelfAttention_Linear4/5's forward, see below) draw from
/// the default generator unless given another, so seed and construct from one thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llm_utils/attention.hpp"
#include "llm_utils/nn/linear.hpp"
#include "llm_utils/nn/parameter.hpp"
#include "llm_utils/nn/state_dict.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {

namespace detail {
struct AttentionProblem;  // src/attention_problem.hpp
struct RowStats;
}  // namespace detail

/// What the four classes share: input checks, the attention core, saved state for backward,
/// inspection, gradients and state dicts. Not constructible on its own.
class SelfAttentionBase {
 public:
  virtual ~SelfAttentionBase() = default;
  SelfAttentionBase(const SelfAttentionBase&) = default;
  SelfAttentionBase& operator=(const SelfAttentionBase&) = default;
  SelfAttentionBase(SelfAttentionBase&&) noexcept = default;
  SelfAttentionBase& operator=(SelfAttentionBase&&) noexcept = default;

  /// The class name of the original, e.g. "SelfAttention_Linear".
  const std::string& class_name() const { return class_name_; }
  int64_t d_in() const { return d_in_; }
  int64_t d_out() const { return d_out_; }

  /// x: (N, d_in) or (B, N, d_in), N >= 1, B >= 1 -> (N, d_out) or (B, N, d_out).
  Tensor forward(ConstTensorView x);
  Tensor operator()(ConstTensorView x) { return forward(x); }

  /// grad_output has the shape forward returned. Returns dL/dx (the shape of x) and
  /// accumulates parameter gradients. May be called more than once per forward (it then
  /// accumulates again); throws StateError before any forward or after load_state_dict.
  Tensor backward(ConstTensorView grad_output);

  /// Clears every parameter gradient (to None by default, as PyTorch >= 2.0 does).
  void zero_grad(bool set_to_none = true);

  /// Learnable parameters with PyTorch's names, in PyTorch's order.
  virtual NamedParameters named_parameters() = 0;

  /// Parameters under PyTorch's names. With `include_derived`, after a forward on 2-D input,
  /// also the derived layer weights the original's state_dict holds then (Linear4/5 only).
  StateDict state_dict(bool include_derived = false) const;

  /// Loads every parameter, all or nothing: a missing key, an unknown key (when `strict`) or a
  /// wrong shape throws ArgumentError naming the key and leaves the module unchanged. Derived
  /// keys (`attnValues2ContextL.weight`, `model.weight`, `attnQueries2ScoresL.weight`) are
  /// accepted and ignored by the classes whose original state dict carries them.
  void load_state_dict(const StateDict& state, bool strict = true);

  /// True once forward has run.
  bool has_forward() const { return batch_ > 0; }
  /// From the last forward, with the rank of its input: values (N, d_out) or (B, N, d_out),
  /// attention weights (N, N) or (B, N, N), context vectors (N, d_out) or (B, N, d_out).
  /// Views into the module, valid until the next forward. Throw StateError before a forward.
  ConstTensorView values() const;
  ConstTensorView attn_weights() const;
  ConstTensorView context_vec() const;

  /// Which attention kernel forward and backward use (default: automatic, which takes the
  /// fused kernel from 64 x 64 scores up).
  void set_backend(Backend backend) { options_.backend = backend; }
  Backend backend() const { return options_.backend; }

 protected:
  SelfAttentionBase(std::string class_name, int64_t d_in, int64_t d_out);

  /// x (B*N, d_in) -> q, k, v: each arrives with B*N*d_out elements (any shape) and is
  /// overwritten as a contiguous (B*N, d_out) matrix.
  virtual void project(ConstTensorView x, Tensor& q, Tensor& k, Tensor& v) const = 0;
  /// Accumulates the projection weights' gradients from dq, dk, dv (B*N, d_out) and returns
  /// dx (B*N, d_in). dq and dk are empty when no gradient flows through them.
  virtual Tensor project_backward(ConstTensorView x, ConstTensorView dq, ConstTensorView dk,
                                  ConstTensorView dv) = 0;
  /// False where the original detaches the attention weights (Linear4/5).
  virtual bool gradient_reaches_queries_and_keys() const { return true; }
  /// Runs after each forward with the batch and sequence sizes.
  virtual void after_forward(int64_t /*batch*/, int64_t /*seq*/) {}
  /// Derived state-dict entries (name, tensor) after a 2-D forward; none by default.
  virtual std::vector<std::pair<std::string, Tensor>> derived_state() const { return {}; }
  /// Whether `key` names a derived entry this class's original state dict may hold.
  virtual bool is_derived_key(const std::string& /*key*/) const { return false; }

  /// The (N, N) attention weights (computed on first use) and (N, d_out) keys of batch element b.
  ConstTensorView saved_attn_weights(int64_t b) const { return all_attn_weights().select(b); }
  ConstTensorView saved_keys(int64_t b) const { return keys_.select(b); }
  int64_t saved_batch() const { return batch_; }
  int64_t saved_seq() const { return seq_; }
  bool saved_input_was_2d() const { return input_was_2d_; }

 private:
  ConstTensorView as_input_rank(const Tensor& t) const;
  /// The attention problem of the saved forward (queries_, keys_, values_ and options_).
  detail::AttentionProblem saved_problem() const;
  /// The saved forward's row statistics when the fused kernel wrote them, else none.
  detail::RowStats row_stats() const;
  /// (B, N, N), recomputed from the saved log-sum-exp the first time it is asked for, so that a
  /// forward never needs N^2 memory unless inspection wants it.
  const Tensor& all_attn_weights() const;

  std::string class_name_;
  int64_t d_in_;
  int64_t d_out_;
  AttentionOptions options_;

  // Saved by forward for backward and inspection; empty before the first forward.
  int64_t batch_ = 0;
  int64_t seq_ = 0;
  bool input_was_2d_ = false;
  bool backward_ready_ = false;
  Tensor input_;                         // (B*N, d_in)
  Tensor queries_;                       // (B, N, d_out)
  Tensor keys_;                          // (B, N, d_out)
  Tensor values_;                        // (B, N, d_out)
  Tensor context_;                       // (B, N, d_out)
  Tensor lse_;                           // (B, N) log-sum-exp of each row of scores
  Tensor row_max_;                       // (B, N) the fused kernel's row statistics, which
  Tensor log_sum_;                       // (B, N) its backward uses instead of lse_
  bool have_row_stats_ = false;          // the last forward ran the fused kernel
  mutable std::optional<Tensor> probs_;  // (B, N, N) attention weights, once asked for
};

/// Weights as bare parameter matrices (d_in, d_out), used as `x @ W`, drawn with `torch.rand`
/// (U[0, 1)) in the order query, key, value.
class SelfAttention_Params : public SelfAttentionBase {
 public:
  SelfAttention_Params(int64_t d_in, int64_t d_out, Generator* generator = nullptr);

  NamedParameters named_parameters() override;

  Parameter W_query;  ///< (d_in, d_out)
  Parameter W_key;    ///< (d_in, d_out)
  Parameter W_value;  ///< (d_in, d_out)

 protected:
  void project(ConstTensorView x, Tensor& q, Tensor& k, Tensor& v) const override;
  Tensor project_backward(ConstTensorView x, ConstTensorView dq, ConstTensorView dk,
                          ConstTensorView dv) override;

 private:
  /// Whether `rows` rows go through the packed weight (large enough for one GEMM to pay).
  bool use_packed(int64_t rows) const;
  /// packed_weight_ = the three weights as they are now.
  void pack_weights() const;
  /// Q, K and V from one GEMM with the three weights packed into (3*d_out, d_in).
  void project_packed(ConstTensorView x, Tensor& q, Tensor& k, Tensor& v) const;
  /// project_packed's backward: dx and the three weights' (and biases') gradients from two
  /// GEMMs against the packed (rows, 3*d_out) output gradient, instead of six.
  Tensor project_backward_packed(ConstTensorView x, ConstTensorView dq, ConstTensorView dk,
                                 ConstTensorView dv);
  mutable Tensor packed_weight_;  // (3*d_out, d_in): W_query, W_key, W_value weights stacked
  mutable Tensor packed_out_;     // (B*N, 3*d_out): [q | k | v] of each row
};

/// Projections through three `Linear(d_in, d_out, bias=qkv_bias)` layers built in the order
/// query, key, value. Base of SelfAttention_Linear, _Linear4 and _Linear5.
class SelfAttentionLinearProjections : public SelfAttentionBase {
 public:
  NamedParameters named_parameters() override;

  Linear W_query;
  Linear W_key;
  Linear W_value;

 protected:
  SelfAttentionLinearProjections(std::string class_name, int64_t d_in, int64_t d_out, bool qkv_bias,
                                 Generator* generator);
  void project(ConstTensorView x, Tensor& q, Tensor& k, Tensor& v) const override;
  Tensor project_backward(ConstTensorView x, ConstTensorView dq, ConstTensorView dk,
                          ConstTensorView dv) override;

 private:
  /// Whether `rows` rows go through the packed weight (large enough for one GEMM to pay).
  bool use_packed(int64_t rows) const;
  /// packed_weight_ = the three weights as they are now.
  void pack_weights() const;
  /// Q, K and V from one GEMM with the three weights packed into (3*d_out, d_in).
  void project_packed(ConstTensorView x, Tensor& q, Tensor& k, Tensor& v) const;
  /// project_packed's backward: dx and the three weights' (and biases') gradients from two
  /// GEMMs against the packed (rows, 3*d_out) output gradient, instead of six.
  Tensor project_backward_packed(ConstTensorView x, ConstTensorView dq, ConstTensorView dk,
                                 ConstTensorView dv);
  mutable Tensor packed_weight_;  // (3*d_out, d_in): W_query, W_key, W_value weights stacked
  mutable Tensor packed_out_;     // (B*N, 3*d_out): [q | k | v] of each row
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
/// numbers from the default generator before its weight is replaced: forward advances the
/// default generator by B*N*N draws, so that modules built after it get PyTorch's weights.
/// `set_advance_generator(false)` turns this off.
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
  bool advance_generator() const { return advance_generator_; }

 private:
  bool advance_generator_ = true;
  mutable std::vector<Linear> context_layers_;  // built on first inspection after a forward
};

/// As SelfAttention_Linear4, and the scores too go through a frozen linear layer:
/// `attnQueries2ScoresL = Linear(d_out, N, bias=False)` whose weight is the keys (N, d_out).
/// Forward advances the default generator by B*(N*d_out + N*N) draws, as the original does.
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
