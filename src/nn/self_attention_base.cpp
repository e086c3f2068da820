// SelfAttentionBase: the four classes' forward and backward through the attention layer (one
// head of width d_out, not causal), and what the original lets one inspect after a forward.

#include <algorithm>
#include <string>

#include "llm_utils/error.hpp"
#include "llm_utils/nn/self_attention.hpp"
#include "nn/attention_layer.hpp"

namespace llm_utils {

SelfAttentionBase::SelfAttentionBase(std::string class_name, int64_t d_in, int64_t d_out)
    : Module(std::move(class_name), d_in, d_out) {
  if (d_in <= 0 || d_out <= 0) {
    throw ArgumentError(this->class_name() + ": d_in and d_out must be positive, got d_in=" +
                        std::to_string(d_in) + ", d_out=" + std::to_string(d_out));
  }
  layer_ = detail::ValuePtr<detail::AttentionLayer>(
      std::make_unique<detail::AttentionLayer>(detail::LayerShape{d_in, 1, 1, d_out}));
}

SelfAttentionBase::SelfAttentionBase(const SelfAttentionBase& other) = default;
SelfAttentionBase::SelfAttentionBase(SelfAttentionBase&& other) noexcept = default;
SelfAttentionBase::~SelfAttentionBase() = default;

Tensor SelfAttentionBase::forward_rows(ConstTensorView x, const Input& in) {
  detail::LayerCall call;
  call.backend = backend();
  call.bf16 = dtype() == DType::bfloat16;
  layer_->forward(x, in.batch, in.seq, qkv_weights(), std::move(call));
  after_forward(in.batch, in.seq);
  return Tensor::from_view(layer_->context());  // (B*N, d_out)
}

Tensor SelfAttentionBase::backward_rows(ConstTensorView dy) {
  return layer_->backward(dy, qkv_weights(), gradient_reaches_queries_and_keys());
}

StateDict SelfAttentionBase::state_dict(bool include_derived) const {
  StateDict out = state_dict();
  if (include_derived) {
    if (has_forward() && saved_batch() > 1) {
      throw ArgumentError(class_name() +
                          ".state_dict: derived layers exist once per batch element after a 3-D "
                          "forward; include_derived needs the last forward to be 2-D");
    }
    for (auto& [name, t] : derived_state()) out.insert(name, std::move(t));
  }
  return out;
}

void SelfAttentionBase::require_forward(const char* what) const {
  if (!has_forward()) throw StateError(class_name() + "." + what + ": no forward has run yet");
}

ConstTensorView SelfAttentionBase::as_input_rank(ConstTensorView t) const {
  return saved_input().was_2d ? t.select(0) : t;
}

ConstTensorView SelfAttentionBase::values() const {
  require_forward("values");
  // (B, 1, N, d_out) -> (B, N, d_out), rows 3 * d_out apart in the packed projection.
  return as_input_rank(layer_->heads_of_qkv(2, 1).transpose(0, 1).select(0));
}

ConstTensorView SelfAttentionBase::attn_weights() const {
  require_forward("attn_weights");
  const Tensor& w = layer_->attention_weights();  // (B, 1, N, N)
  const int64_t b = saved_batch(), n = saved_input().seq;
  return as_input_rank(ConstTensorView(w.data(), {b, n, n}));
}

ConstTensorView SelfAttentionBase::context_vec() const {
  require_forward("context_vec");
  const int64_t b = saved_batch(), n = saved_input().seq;
  return as_input_rank(ConstTensorView(layer_->context().data(), {b, n, d_out()}));
}

ConstTensorView SelfAttentionBase::saved_attn_weights(int64_t b) const {
  const int64_t n = saved_input().seq;
  return ConstTensorView(layer_->attention_weights().data() + b * n * n, {n, n});
}

ConstTensorView SelfAttentionBase::saved_keys(int64_t b) const {
  return layer_->heads_of_qkv(1, 1).select(b).select(0);  // (N, d_out), rows 3 * d_out apart
}

}  // namespace llm_utils
