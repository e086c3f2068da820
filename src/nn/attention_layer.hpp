#pragma once
// The one forward and backward of every attention module but the wrapper (which stacks
// CausalAttention): the three projections as ONE GEMM against their packed weights, attention
// read in place from the packed output's heads, the heads' context vectors written straight into
// one merged (B*N, H*hd) matrix. MultiHeadAttention adds out_proj after it; the four selfAttn
// classes and CausalAttention are its one-head case.
//
//   x (B*N, d_in)  --GEMM-->  qkv (B*N, W),  W = (H + 2G) * hd:  [q heads | k heads | v heads]
//   q (B, H, N, hd), k and v (B, G, N, hd): strided views of qkv (row stride W)
//   context (B*N, H*hd) = attention(q, k, v), written by the kernels through (B, H, N, hd) views
//
// With dropout (training mode, p > 0) the attention weights are materialised and dropped
// (attention_layer_dropout.cpp); otherwise the kernels run (fused or reference).
//
// In bfloat16 (LayerCall::bf16, attention_layer_bf16.cpp) x and the packed weights are rounded,
// the projection GEMM accumulates in float32 and its output is rounded into qkv_bf16 (B*N, W),
// the bfloat16 kernels read their heads in place and write context_bf16 (B*N, H*hd); the float32
// qkv and context are widened from them only when asked for.

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "detail/attention_problem.hpp"
#include "llm_utils/attention.hpp"
#include "llm_utils/bfloat16.hpp"
#include "llm_utils/nn/attention_executor.hpp"
#include "llm_utils/nn/parameter.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/rope.hpp"
#include "llm_utils/tensor.hpp"
#include "nn/broadcast_mask.hpp"

namespace llm_utils::detail {

/// The projection weights as a module holds them, for the duration of one call; read (and
/// packed) at every forward, since optimizers change them in place.
struct QkvWeights {
  /// true: Linear weights (width, d_in), y = x W^T + b. false: bare (d_in, width) matrices,
  /// y = x @ W (SelfAttention_Params, which has no bias).
  bool linear_layout = true;
  const ParameterRef* weight[3] = {};  // query (H*hd wide), key and value (G*hd wide each)
  const ParameterRef* bias[3] = {};    // null when the layer has none
};

struct LayerShape {
  int64_t d_in;
  int64_t heads;     // H
  int64_t kv_heads;  // G, dividing H
  int64_t head_dim;  // hd
  int64_t qkv_width() const { return (heads + 2 * kv_heads) * head_dim; }
};

/// What one forward computes beyond the weights.
struct LayerCall {
  bool causal = false;
  std::optional<float> scale_divisor;  // none: sqrt(head_dim)
  BroadcastMask mask;                  // over (B, H, N, N)
  double dropout = 0.0;                // > 0: the materialised, dropped path
  Generator* generator = nullptr;      // draws the dropout mask; null: the default generator
  Backend backend = Backend::automatic;
  bool bf16 = false;  // bfloat16 storage, float32 accumulation (Module::set_dtype)
  // Runs the attention instead of the kernels (float32, no mask but causal, no dropout);
  // null: the kernels.
  std::shared_ptr<AttentionExecutor> executor;
  // The variants (docs/variants.md), as AttentionOptions has them; copies, so that the saved
  // forward stays valid whatever happens to the module that made it.
  int64_t window_left = -1;
  float softcap = 0.0f;
  Tensor alibi_slopes;                    // (H), or empty
  Tensor sinks;                           // (H) the sink logits' values, or empty
  std::shared_ptr<const RopeTable> rope;  // q and k rotated after the projection; null: none
  std::vector<int64_t> cu_seqlens;        // packed sequences (batch 1); empty: none
};

class AttentionLayer {
 public:
  explicit AttentionLayer(LayerShape shape) : shape_(shape) {}

  /// x (B*N, d_in) -> context (B*N, H*hd), kept here (context()). Saves what backward needs.
  void forward(ConstTensorView x, int64_t batch, int64_t seq, const QkvWeights& w, LayerCall call);
  /// dcontext (B*N, H*hd) of the last forward -> dx (B*N, d_in); accumulates the gradients of
  /// the weights that require them. `through_qk` false: the attention weights are constants
  /// (Linear4/5), so only the value path is differentiated and q, k get no gradient.
  Tensor backward(ConstTensorView dcontext, const QkvWeights& w, bool through_qk);

  const LayerShape& shape() const { return shape_; }
  int64_t batch() const { return batch_; }
  int64_t seq() const { return seq_; }
  /// (B*N, H*hd), the heads' context vectors side by side (after a bfloat16 forward, their
  /// bfloat16 values widened).
  const Tensor& context() const;
  /// Whether the last forward ran in bfloat16; then context_bf16() holds the context.
  bool ran_bf16() const { return bf16_; }
  /// (B*N, H*hd) the context of a bfloat16 forward.
  const BFloat16Tensor& context_bf16() const { return context_bf16_; }
  /// Columns [first * hd, (first + count) * hd) of qkv as (B, count, N, hd): the heads of the
  /// queries (first 0), keys (first H) or values (first H + G).
  ConstTensorView heads_of_qkv(int64_t first, int64_t count) const;
  /// (B, H, N, N) attention weights of the last forward, before dropout: recomputed from the
  /// saved statistics the first time they are asked for.
  const Tensor& attention_weights() const;
  /// The last forward's dropout multipliers (B*H, N, N): 0 or 1 / (1 - p); empty without dropout.
  const Tensor& dropout_mask() const { return keep_; }
  /// (H) the sink logits' gradient from the last backward (empty without sinks).
  const Tensor& sink_gradient() const { return dsinks_; }

  /// The packed projection: W (W, d_in) rows [Wq; Wk; Wv] (Linear layout) or (d_in, W) columns
  /// [Wq | Wk | Wv], and the biases (W) (empty without). Packed by each forward; the KV-cache
  /// forward packs them with pack().
  void pack(const QkvWeights& w);
  /// ArgumentError unless the biases still fit the weights (all present or none, each of its
  /// projection's width): a Linear's bias is an optional a caller can reset or emplace.
  void check_weights(const QkvWeights& w) const;
  const Tensor& packed_weight() const { return packed_weight_; }
  const Tensor& packed_bias() const { return packed_bias_; }
  /// Forgets the saved forward (a KV-cache step replaced it).
  void clear_saved();

 private:
  /// Sizes, scale, mask and variants of the last forward.
  AttentionShape call_shape() const;
  template <typename T>
  BasicAttentionProblem<T> problem_over(const T* qkv) const;
  AttentionProblem problem() const;
  void forward_with_dropout(const AttentionProblem& p);
  /// The executor's forward and backward on the heads of qkv and context (call_.executor), with
  /// the call's causal flag and scale.
  AttentionOptions executor_options() const;
  void forward_with_executor();
  void backward_with_executor(ConstTensorView dcontext, Tensor& dqkv, bool through_qk) const;
  void backward_with_dropout(const AttentionProblem& p, const BackwardTensors& t) const;
  /// The projections' backward over columns [c0, c1) of dqkv (B*N, W), float32 or bfloat16
  /// with x and the packed weight of the same type: accumulates the weight and bias gradients
  /// there, returns dx.
  template <typename T>
  Tensor projection_backward(const T* dqkv, const T* x, const T* packed_weight, int64_t c0,
                             int64_t c1, const QkvWeights& w);
  /// The bfloat16 forward after the projection inputs are set (attention_layer_bf16.cpp).
  void forward_bf16(ConstTensorView x, const QkvWeights& w);
  Tensor backward_bf16(ConstTensorView dcontext, const QkvWeights& w, bool through_qk);
  /// The float32 qkv with the bfloat16 forward's values, for the accessors and dropout.
  void widen_qkv() const;
  /// The positions of the B*N rows (RoPE): n within its batch element or packed sequence.
  void set_positions();
  /// RoPE on the q and k heads of (B*N, W) rows of qkv or dqkv: forward, or `inverse`.
  template <typename T>
  void rotate_qk(T* rows, bool inverse) const;
  /// dsinks_ from the backward's out (float32 context), lse and dcontext, when sinks ran.
  void sink_backward(ConstTensorView dcontext);

  LayerShape shape_;
  LayerCall call_;
  int64_t batch_ = 0, seq_ = 0;
  Backend backend_used_ = Backend::reference;
  Tensor x_;                // (B*N, d_in) the input
  Tensor packed_weight_;    // (W, d_in) or (d_in, W): the weights the forward used
  Tensor packed_bias_;      // (W), or empty
  mutable Tensor qkv_;      // (B*N, W); after a bfloat16 forward, widened when asked for
  mutable Tensor context_;  // (B*N, H*hd); likewise
  // The bfloat16 forward's (empty otherwise): x, the packed weight, qkv and context rounded.
  bool bf16_ = false;
  mutable bool qkv_widened_ = false, context_widened_ = false;
  BFloat16Tensor x_bf16_;        // (B*N, d_in)
  BFloat16Tensor weight_bf16_;   // as packed_weight_
  BFloat16Tensor qkv_bf16_;      // (B*N, W)
  BFloat16Tensor context_bf16_;  // (B*N, H*hd)
  Tensor lse_;                   // (B, H, N) log-sum-exp of each row of scores (kernel path)
  Tensor row_max_;               // (B*H, N) the fused kernel's row statistics (kernel path)
  Tensor log_sum_;               // (B*H, N)
  bool have_row_stats_ = false;
  Tensor probs_;                           // (B*H, N, N) softmax before dropout (dropout path only)
  Tensor keep_;                            // (B*H, N, N) dropout multipliers (dropout path only)
  mutable std::optional<Tensor> weights_;  // (B, H, N, N), once asked for
  std::vector<int64_t> positions_;         // (B*N) RoPE position of each row (with RoPE)
  Tensor dsinks_;                          // (H) the last backward's sink gradient
};

/// Strided views of a (B*N, width) matrix's column block [c0, c0 + count * hd) as
/// (B, count, N, hd) heads, for the kernels.
template <typename T>
Strided<T> heads_view(T* rows, int64_t seq, int64_t width, int64_t c0, int64_t hd) {
  return {rows + c0, seq * width, hd, width};
}

}  // namespace llm_utils::detail
