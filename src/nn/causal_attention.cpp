// CausalAttention: the book's single-head causal attention with dropout, the attention layer's
// one-head causal case.

#include "llm_utils/nn/causal_attention.hpp"

#include "llm_utils/error.hpp"
#include "nn/attention_layer.hpp"
#include "nn/attention_module_util.hpp"

namespace llm_utils {

namespace {
const std::string kName = "CausalAttention";

// Validates before the first Linear draws anything, so a bad call leaves the generator as is.
int64_t checked_d_in(int64_t d_in, int64_t d_out, int64_t context_length, double dropout) {
  detail::check_module_args(kName, d_in, d_out, context_length, dropout, 1, false);
  return d_in;
}
}  // namespace

CausalAttention::CausalAttention(int64_t d_in, int64_t d_out, int64_t context_length,
                                 double dropout, bool qkv_bias, Generator* generator)
    : Module(kName, checked_d_in(d_in, d_out, context_length, dropout), d_out, context_length),
      W_query(d_in, d_out, qkv_bias, generator),
      W_key(d_in, d_out, qkv_bias, generator),
      W_value(d_in, d_out, qkv_bias, generator),
      mask(detail::causal_mask_buffer(context_length)),
      dropout_(dropout),
      generator_(generator),
      layer_(std::make_unique<detail::AttentionLayer>(detail::LayerShape{d_in, 1, 1, d_out})) {}

CausalAttention::CausalAttention(const CausalAttention& other) = default;
CausalAttention::CausalAttention(CausalAttention&& other) noexcept = default;
CausalAttention::~CausalAttention() = default;

Tensor CausalAttention::forward_rows(ConstTensorView x, const Input& in) {
  detail::LayerCall call;
  call.causal = true;
  call.dropout = training() ? dropout_ : 0.0;
  call.generator = generator_;
  call.backend = backend();
  call.bf16 = dtype() == DType::bfloat16;
  layer_->forward(x, in.batch, in.seq, detail::linear_qkv_weights(W_query, W_key, W_value),
                  std::move(call));
  return Tensor::from_view(layer_->context());  // (B*N, d_out)
}

Tensor CausalAttention::backward_rows(ConstTensorView dy) {
  return layer_->backward(dy, detail::linear_qkv_weights(W_query, W_key, W_value), true);
}

std::vector<StateEntry> CausalAttention::state_entries() const {
  // As PyTorch: the module's own buffer first, then its children's parameters.
  std::vector<StateEntry> out = {StateEntry{"mask", {}, &mask}};
  detail::add_linear_entries(out, "W_query", W_query);
  detail::add_linear_entries(out, "W_key", W_key);
  detail::add_linear_entries(out, "W_value", W_value);
  return out;
}

ConstTensorView CausalAttention::attn_weights() const {
  if (!has_forward()) throw StateError(kName + ".attn_weights: no forward has run yet");
  const Tensor& w = layer_->attention_weights();  // (B, 1, N, N)
  const Input& in = saved_input();
  const ConstTensorView all(w.data(), {in.batch, in.seq, in.seq});
  return in.was_2d ? all.select(0) : all;
}

const Tensor& CausalAttention::dropout_mask() const {
  return layer_->dropout_mask();
}

}  // namespace llm_utils
