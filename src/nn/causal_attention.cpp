// CausalAttention: the book's single-head causal attention with dropout.

#include "llm_utils/nn/causal_attention.hpp"

#include "llm_utils/error.hpp"
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
    : W_query(checked_d_in(d_in, d_out, context_length, dropout), d_out, qkv_bias, generator),
      W_key(d_in, d_out, qkv_bias, generator),
      W_value(d_in, d_out, qkv_bias, generator),
      mask(detail::causal_mask_buffer(context_length)),
      dropout_(dropout),
      generator_(generator) {}

Tensor CausalAttention::forward(ConstTensorView x) {
  const detail::InputShape in =
      detail::check_input(kName + ".forward", x, d_in(), context_length());
  const int64_t b = in.batch, n = in.seq, d = d_out();
  Tensor input = Tensor::from_view(x).reshape({b * n, d_in()});  // (B*N, d_in)
  // The book computes keys, queries, values in that order; no draws, so order is free.
  Tensor k = W_key.forward(input).reshape({b, n, d});  // (B, N, d_out)
  Tensor q = W_query.forward(input).reshape({b, n, d});
  Tensor v = W_value.forward(input).reshape({b, n, d});
  const double p = training_ ? dropout_ : 0.0;
  Generator& gen = generator_ != nullptr ? *generator_ : default_generator();
  Tensor out = core_.forward(std::move(q), std::move(k), std::move(v), detail::CoreOptions{}, p,
                             backend_, gen);
  batch_ = b;
  seq_ = n;
  input_was_2d_ = in.was_2d;
  input_ = std::move(input);
  return in.was_2d ? std::move(out).reshape({n, d}) : out;
}

Tensor CausalAttention::backward(ConstTensorView grad_output_view) {
  Tensor grad_copy;
  const ConstTensorView grad_output = contiguous(grad_output_view, grad_copy);
  const std::string where = kName + ".backward";
  if (batch_ == 0) throw StateError(where + ": called before any forward");
  const Shape expected = input_was_2d_ ? Shape{seq_, d_out()} : Shape{batch_, seq_, d_out()};
  if (grad_output.shape() != expected) {
    throw ArgumentError(where + ": grad_output has shape " + shape_to_string(grad_output.shape()) +
                        ", the forward output had shape " + shape_to_string(expected));
  }
  Tensor dq, dk, dv;  // (B, N, d_out) each
  core_.backward(ConstTensorView(grad_output.data(), {batch_, seq_, d_out()}), dq, dk, dv);
  const Shape flat = {batch_ * seq_, d_out()};
  // forward `q = W_query(x)` etc.: dx sums the three projections' input gradients.
  Tensor dx = W_query.backward(input_, ConstTensorView(dq.data(), flat));
  const Tensor dx_k = W_key.backward(input_, ConstTensorView(dk.data(), flat));
  const Tensor dx_v = W_value.backward(input_, ConstTensorView(dv.data(), flat));
  for (int64_t i = 0; i < dx.numel(); ++i) dx[i] += dx_k[i] + dx_v[i];
  return input_was_2d_ ? std::move(dx).reshape({seq_, d_in()})
                       : std::move(dx).reshape({batch_, seq_, d_in()});
}

void CausalAttention::zero_grad(bool set_to_none) {
  for (auto& [name, p] : named_parameters()) p->zero_grad(set_to_none);
}

NamedParameters CausalAttention::named_parameters() {
  NamedParameters out;
  for (auto [name, layer] : {std::pair{"W_query", &W_query}, std::pair{"W_key", &W_key},
                             std::pair{"W_value", &W_value}}) {
    out.emplace_back(std::string(name) + ".weight", &layer->weight);
    if (layer->bias) out.emplace_back(std::string(name) + ".bias", &*layer->bias);
  }
  return out;
}

StateDict CausalAttention::state_dict() const {
  StateDict out;
  out.insert("mask", mask);
  for (const auto& [name, p] : const_cast<CausalAttention*>(this)->named_parameters()) {
    out.insert(name, p->data);
  }
  return out;
}

void CausalAttention::load_state_dict(const StateDict& state, bool strict) {
  detail::NamedTensors targets = {{"mask", &mask}};
  for (auto& [name, p] : named_parameters()) targets.emplace_back(name, &p->data);
  detail::load_named(kName + ".load_state_dict", state, strict, targets);
  batch_ = 0;  // the saved forward no longer matches the weights
}

}  // namespace llm_utils
