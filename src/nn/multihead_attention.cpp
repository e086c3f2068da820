// MultiHeadAttentionWrapper (heads side by side) and MultiHeadAttention (one projection split
// into heads, then out_proj), the book's chapter 3.6.

#include "llm_utils/nn/multihead_attention.hpp"

#include <cmath>
#include <cstring>

#include "llm_utils/error.hpp"
#include "nn/attention_module_util.hpp"
#include "nn/broadcast_mask.hpp"

namespace llm_utils {

// ---------------------------------------------------------------- MultiHeadAttentionWrapper

namespace {
const std::string kWrapper = "MultiHeadAttentionWrapper";
const std::string kMha = "MultiHeadAttention";

std::string head_prefix(size_t h) {
  return "heads." + std::to_string(h) + ".";
}
}  // namespace

MultiHeadAttentionWrapper::MultiHeadAttentionWrapper(int64_t d_in, int64_t d_out,
                                                     int64_t context_length, double dropout,
                                                     int64_t num_heads, bool qkv_bias,
                                                     Generator* generator) {
  detail::check_module_args(kWrapper, d_in, d_out, context_length, dropout, num_heads, false);
  heads.reserve(static_cast<size_t>(num_heads));
  // nn.ModuleList([CausalAttention(...) for _ in range(num_heads)]): built, and drawn, in order.
  for (int64_t h = 0; h < num_heads; ++h) {
    heads.emplace_back(d_in, d_out, context_length, dropout, qkv_bias, generator);
  }
}

Tensor MultiHeadAttentionWrapper::forward(ConstTensorView x) {
  std::vector<Tensor> outs;  // per head (..., N, d_out)
  for (auto& head : heads) outs.push_back(head.forward(x));
  const int64_t d = heads.front().d_out(), width = d * num_heads();
  Shape shape = outs.front().shape();
  shape.back() = width;
  Tensor out(shape);  // (..., N, d_out * H)
  const int64_t rows = out.numel() / width;
  // torch.cat(dim=-1): head h fills columns [h*d, (h+1)*d) of each row.
  for (int64_t h = 0; h < num_heads(); ++h) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(out.data() + r * width + h * d, outs[h].data() + r * d, sizeof(float) * d);
    }
  }
  return out;
}

Tensor MultiHeadAttentionWrapper::backward(ConstTensorView grad_output_view) {
  Tensor grad_copy;
  const ConstTensorView grad_output = contiguous(grad_output_view, grad_copy);
  const int64_t d = heads.front().d_out(), width = d * num_heads();
  if (grad_output.dim() < 2 || grad_output.size(-1) != width) {
    throw ArgumentError(kWrapper + ".backward: grad_output must end in a dimension of " +
                        std::to_string(width) + ", got shape " +
                        shape_to_string(grad_output.shape()));
  }
  Shape head_shape = grad_output.shape();
  head_shape.back() = d;
  const int64_t rows = grad_output.numel() / width;
  Tensor dx;
  // forward `cat(dim=-1)`: each head's gradient is its column block; dx sums the heads'.
  for (int64_t h = 0; h < num_heads(); ++h) {
    Tensor dout(head_shape);  // (..., N, d_out)
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(dout.data() + r * d, grad_output.data() + r * width + h * d, sizeof(float) * d);
    }
    Tensor dx_h = heads[h].backward(dout);
    if (h == 0) {
      dx = std::move(dx_h);
    } else {
      for (int64_t i = 0; i < dx.numel(); ++i) dx[i] += dx_h[i];
    }
  }
  return dx;
}

void MultiHeadAttentionWrapper::zero_grad(bool set_to_none) {
  for (auto& head : heads) head.zero_grad(set_to_none);
}

void MultiHeadAttentionWrapper::train(bool mode) {
  for (auto& head : heads) head.train(mode);
}

void MultiHeadAttentionWrapper::set_backend(Backend backend) {
  for (auto& head : heads) head.set_backend(backend);
}

NamedParameters MultiHeadAttentionWrapper::named_parameters() {
  NamedParameters out;
  for (size_t h = 0; h < heads.size(); ++h) {
    for (auto& [name, p] : heads[h].named_parameters()) out.emplace_back(head_prefix(h) + name, p);
  }
  return out;
}

StateDict MultiHeadAttentionWrapper::state_dict() const {
  StateDict out;
  for (size_t h = 0; h < heads.size(); ++h) {
    for (const auto& [name, t] : heads[h].state_dict()) out.insert(head_prefix(h) + name, t);
  }
  return out;
}

void MultiHeadAttentionWrapper::load_state_dict(const StateDict& state, bool strict) {
  detail::NamedTensors targets;
  for (size_t h = 0; h < heads.size(); ++h) {
    targets.emplace_back(head_prefix(h) + "mask", &heads[h].mask);
    for (auto& [name, p] : heads[h].named_parameters()) {
      targets.emplace_back(head_prefix(h) + name, &p->data);
    }
  }
  detail::load_named(kWrapper + ".load_state_dict", state, strict, targets);
  // Everything checked: hand each head its share, which also drops its stale saved forward.
  for (size_t h = 0; h < heads.size(); ++h) {
    StateDict share;
    const std::string prefix = head_prefix(h);
    for (const auto& [name, t] : state) {
      if (name.rfind(prefix, 0) == 0) share.insert(name.substr(prefix.size()), t);
    }
    heads[h].load_state_dict(share, /*strict=*/false);
  }
}

// ---------------------------------------------------------------- MultiHeadAttention

namespace {
int64_t kv_groups_of(int64_t num_heads, const MultiHeadAttentionOptions& options) {
  return options.num_kv_groups == 0 ? num_heads : options.num_kv_groups;
}

// Validates before the first Linear draws anything, so a bad call leaves the generator as is.
int64_t checked_d_in(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                     int64_t num_heads, const MultiHeadAttentionOptions& options) {
  detail::check_module_args(kMha, d_in, d_out, context_length, dropout, num_heads, true);
  const int64_t groups = kv_groups_of(num_heads, options);
  if (groups < 1 || num_heads % groups != 0) {
    throw ArgumentError(kMha + ": num_heads must be a multiple of num_kv_groups, got num_heads=" +
                        std::to_string(num_heads) +
                        ", num_kv_groups=" + std::to_string(options.num_kv_groups));
  }
  if (options.scale && !(*options.scale > 0.0 && std::isfinite(*options.scale))) {
    throw ArgumentError(kMha + ": scale must be positive and finite, got " +
                        std::to_string(*options.scale));
  }
  return d_in;
}

std::optional<float> divisor_of(const MultiHeadAttentionOptions& options) {
  if (!options.scale) return std::nullopt;
  return static_cast<float>(1.0 / *options.scale);
}
}  // namespace

MultiHeadAttention::MultiHeadAttention(int64_t d_in, int64_t d_out, int64_t context_length,
                                       double dropout, int64_t num_heads, bool qkv_bias,
                                       Generator* generator)
    : MultiHeadAttention(d_in, d_out, context_length, dropout, num_heads, qkv_bias,
                         MultiHeadAttentionOptions{}, generator) {}

MultiHeadAttention::MultiHeadAttention(int64_t d_in, int64_t d_out, int64_t context_length,
                                       double dropout, int64_t num_heads, bool qkv_bias,
                                       const MultiHeadAttentionOptions& options,
                                       Generator* generator)
    : W_query(checked_d_in(d_in, d_out, context_length, dropout, num_heads, options), d_out,
              qkv_bias, generator),
      W_key(d_in, kv_groups_of(num_heads, options) * (d_out / num_heads), qkv_bias, generator),
      W_value(d_in, kv_groups_of(num_heads, options) * (d_out / num_heads), qkv_bias, generator),
      out_proj(d_out, d_out, /*bias=*/true, generator),
      mask(detail::causal_mask_buffer(context_length)),
      num_heads_(num_heads),
      num_kv_groups_(kv_groups_of(num_heads, options)),
      dropout_(dropout),
      scale_divisor_(divisor_of(options)),
      causal_(options.causal),
      generator_(generator) {}

detail::CoreOptions MultiHeadAttention::core_options() const {
  detail::CoreOptions o;
  o.causal = causal_;
  o.scale_divisor = scale_divisor_;
  o.heads = num_heads_;
  o.kv_group = num_heads_ / num_kv_groups_;
  return o;
}

Tensor MultiHeadAttention::forward(ConstTensorView x, const AttentionForwardOptions& options) {
  if (options.use_cache) return forward_cached(x, options);
  const std::string where = kMha + ".forward";
  const detail::InputShape in = detail::check_input(where, x, d_in(), context_length());
  const int64_t b = in.batch, n = in.seq, h = num_heads_, g = num_kv_groups_;
  detail::CoreOptions core = core_options();
  core.mask = detail::merge_masks(where, options.attn_mask, options.key_padding_mask, {b, h, n, n});
  Tensor input = Tensor::from_view(x).reshape({b * n, d_in()});     // (B*N, d_in)
  Tensor k = detail::split_heads(W_key.forward(input), b, n, g);    // (B*G, N, head_dim)
  Tensor q = detail::split_heads(W_query.forward(input), b, n, h);  // (B*H, N, head_dim)
  Tensor v = detail::split_heads(W_value.forward(input), b, n, g);  // (B*G, N, head_dim)
  const double p = training_ ? dropout_ : 0.0;
  Generator& gen = generator_ != nullptr ? *generator_ : default_generator();
  const Tensor heads =
      core_.forward(std::move(q), std::move(k), std::move(v), std::move(core), p, backend_, gen);
  Tensor merged = detail::merge_heads(heads, b, n, h);  // (B*N, d_out)
  Tensor out = out_proj.forward(merged);                // (B*N, d_out)
  batch_ = b;
  seq_ = n;
  input_was_2d_ = in.was_2d;
  last_forward_cached_ = false;
  input_ = std::move(input);
  merged_ = std::move(merged);
  return in.was_2d ? std::move(out).reshape({n, d_out()}) : std::move(out).reshape({b, n, d_out()});
}

Tensor MultiHeadAttention::backward(ConstTensorView grad_output_view) {
  Tensor grad_copy;
  const ConstTensorView grad_output = contiguous(grad_output_view, grad_copy);
  const std::string where = kMha + ".backward";
  if (last_forward_cached_) {
    throw StateError(where +
                     ": the last forward used the KV cache, which is for inference; "
                     "run forward without use_cache to train");
  }
  if (batch_ == 0) throw StateError(where + ": called before any forward");
  const Shape expected = input_was_2d_ ? Shape{seq_, d_out()} : Shape{batch_, seq_, d_out()};
  if (grad_output.shape() != expected) {
    throw ArgumentError(where + ": grad_output has shape " + shape_to_string(grad_output.shape()) +
                        ", the forward output had shape " + shape_to_string(expected));
  }
  const Shape flat = {batch_ * seq_, d_out()};
  // forward `out = out_proj(merged)`.
  const Tensor dmerged = out_proj.backward(merged_, ConstTensorView(grad_output.data(), flat));
  // forward `merged = merge_heads(core(q, k, v))`.
  Tensor dq, dk, dv;  // (B*H, N, head_dim), then (B*G, N, head_dim) each
  core_.backward(detail::split_heads(dmerged, batch_, seq_, num_heads_), dq, dk, dv);
  // forward `q = split_heads(W_query(x))` etc.: dx sums the three projections' input gradients.
  const int64_t g = num_kv_groups_;
  Tensor dx = W_query.backward(input_, detail::merge_heads(dq, batch_, seq_, num_heads_));
  const Tensor dx_k = W_key.backward(input_, detail::merge_heads(dk, batch_, seq_, g));
  const Tensor dx_v = W_value.backward(input_, detail::merge_heads(dv, batch_, seq_, g));
  for (int64_t i = 0; i < dx.numel(); ++i) dx[i] += dx_k[i] + dx_v[i];
  return input_was_2d_ ? std::move(dx).reshape({seq_, d_in()})
                       : std::move(dx).reshape({batch_, seq_, d_in()});
}

void MultiHeadAttention::zero_grad(bool set_to_none) {
  for (auto& [name, p] : named_parameters()) p->zero_grad(set_to_none);
}

NamedParameters MultiHeadAttention::named_parameters() {
  NamedParameters out;
  for (auto [name, layer] : {std::pair{"W_query", &W_query}, std::pair{"W_key", &W_key},
                             std::pair{"W_value", &W_value}, std::pair{"out_proj", &out_proj}}) {
    out.emplace_back(std::string(name) + ".weight", &layer->weight);
    if (layer->bias) out.emplace_back(std::string(name) + ".bias", &*layer->bias);
  }
  return out;
}

StateDict MultiHeadAttention::state_dict() const {
  StateDict out;
  out.insert("mask", mask);
  for (const auto& [name, p] : const_cast<MultiHeadAttention*>(this)->named_parameters()) {
    out.insert(name, p->data);
  }
  return out;
}

void MultiHeadAttention::load_state_dict(const StateDict& state, bool strict) {
  detail::NamedTensors targets = {{"mask", &mask}};
  for (auto& [name, p] : named_parameters()) targets.emplace_back(name, &p->data);
  detail::load_named(kMha + ".load_state_dict", state, strict, targets);
  batch_ = 0;  // the saved forward no longer matches the weights
  reset_cache();
}

}  // namespace llm_utils
